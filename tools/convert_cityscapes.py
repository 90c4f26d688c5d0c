#!/usr/bin/env python
"""Create the *_gtFine_labelTrainIds.png files that training reads from the
*_gtFine_labelIds.png files of the official Cityscapes download.
python tools/convert_cityscapes.py data/cityscapes [--nproc 8]"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='Cityscapes root (holds gtFine/)')
    parser.add_argument('--nproc', type=int, default=1)
    parser.add_argument('--overwrite', action='store_true',
                        help='rewrite existing labelTrainIds files')
    args = parser.parse_args(argv)
    from repseg.datasets import check_cityscapes
    from repseg.datasets.cityscapes import convert_label_ids
    from repseg.errors import RepsegError
    try:
        n = convert_label_ids(args.root, args.nproc, args.overwrite)
        print(f'\nwrote {n} labelTrainIds files')
        print(f'dataset check: {check_cityscapes(args.root)} images, OK')
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')


if __name__ == '__main__':
    main()
