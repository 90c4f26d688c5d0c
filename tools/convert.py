#!/usr/bin/env python
"""Fuse a training checkpoint of a segmentor into a deploy checkpoint (every
RepVGG block one 3x3 conv, conv-BN pairs folded), write its deploy config
next to it (OUT without .pth, .py) and verify fused == unfused.

  python tools/convert.py CONFIG CHECKPOINT OUT.pth [--shape H W] [--force]
  python tools/test.py OUT.py OUT.pth       # the deploy config and checkpoint
"""
from _cli import (add_cfg_options, add_config, add_force, add_shape,
                  add_unsafe_load, make_parser, run)


def build_parser():
    parser = make_parser(__doc__)
    add_config(parser, 'the model the checkpoint was trained with')
    parser.add_argument('checkpoint', help='The training checkpoint.')
    parser.add_argument('out', help='The fused checkpoint to write (.pth).')
    add_force(parser, 'OUT and its deploy config')
    add_shape(parser, 'the fused == unfused verification')
    add_unsafe_load(parser)
    add_cfg_options(parser)
    return parser


def main(argv=None):
    def convert(args):
        from repseg.apis import convert, convert_summary, load_cfg
        r = convert(load_cfg(args.config, cfg_options=args.cfg_options),
                    args.checkpoint, args.out, args.force, args.input_size,
                    args.allow_unsafe)
        print('\n'.join(convert_summary(r)))

    run(build_parser(), convert, argv)


if __name__ == '__main__':
    main()
