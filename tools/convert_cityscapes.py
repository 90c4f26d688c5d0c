#!/usr/bin/env python
"""Create the *_gtFine_labelTrainIds.png files that training reads from the
*_gtFine_labelIds.png files of the official Cityscapes download.

  python tools/convert_cityscapes.py data/cityscapes [--nproc 8]
"""

from _cli import make_parser, run


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument('root', help='The Cityscapes root (holds gtFine/).')
    parser.add_argument('--nproc', type=int, default=1,
                        help='Processes converting in parallel (default 1).')
    parser.add_argument('--overwrite', action='store_true',
                        help='Rewrite existing labelTrainIds files.')
    return parser


def main(argv=None):
    def convert(args):
        from repseg.apis import check_cityscapes, convert_label_ids
        n = convert_label_ids(args.root, args.nproc, args.overwrite)
        print(f'\nwrote {n} labelTrainIds files')
        print(f'dataset check: {check_cityscapes(args.root)} images, OK')

    run(build_parser(), convert, argv)


if __name__ == '__main__':
    main()
