#!/usr/bin/env python
"""Check a Cityscapes folder before training (layout, counts, label values).
python tools/check_dataset.py data/cityscapes [--all]"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='Cityscapes root')
    parser.add_argument('--all', action='store_true',
                        help='decode every file (default: 50 per split)')
    args = parser.parse_args(argv)
    from repseg.datasets import check_cityscapes
    from repseg.datasets.cityscapes import OFFICIAL_COUNTS
    from repseg.errors import RepsegError
    try:
        counts = check_cityscapes(args.root,
                                  max_files=None if args.all else 50)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    for split, n in counts.items():
        note = '' if n == OFFICIAL_COUNTS[split] else \
            f'  (the official gtFine {split} split has ' \
            f'{OFFICIAL_COUNTS[split]})'
        print(f'{split}: {n} images with train-id labels{note}')
    print('OK')


if __name__ == '__main__':
    main()
