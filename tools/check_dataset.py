#!/usr/bin/env python
"""Check a Cityscapes folder before training: layout, image and label
counts, label values (train ids).

  python tools/check_dataset.py data/cityscapes [--all]
"""

from _cli import make_parser, run


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument('root', help='The Cityscapes root (holds '
                        'leftImg8bit/ and gtFine/).')
    parser.add_argument('--all', action='store_true',
                        help='Decode every file (default: 50 per split).')
    return parser


def main(argv=None):
    def check(args):
        from repseg.apis import OFFICIAL_COUNTS, check_cityscapes
        counts = check_cityscapes(args.root,
                                  max_files=None if args.all else 50)
        for split, n in counts.items():
            note = '' if n == OFFICIAL_COUNTS[split] else \
                f'  (the official gtFine {split} split has ' \
                f'{OFFICIAL_COUNTS[split]})'
            print(f'{split}: {n} images with train-id labels{note}')
        print('OK')

    run(build_parser(), check, argv)


if __name__ == '__main__':
    main()
