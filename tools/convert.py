#!/usr/bin/env python
"""Fuse a training checkpoint of a segmentor into a deploy checkpoint (every
RepVGG block one 3x3 conv, conv-BN pairs folded), write its deploy config
next to it (OUT without .pth, .py) and verify fused == unfused.

  python tools/convert.py CONFIG CHECKPOINT OUT.pth [--shape H W] [--force]
  python tools/test.py OUT.py OUT.pth       # the deploy config and checkpoint
"""
import sys

from _cli import (add_cfg_options, add_config, add_force, add_shape,
                  add_unsafe_load, make_parser)


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
    parser = build_parser()
    args = parser.parse_args(argv)
    from repseg.deploy import convert_checkpoint
    from repseg.engine import load_cfg
    from repseg.errors import RepsegError
    try:
        cfg = load_cfg(args.config, cfg_options=args.cfg_options)
        r = convert_checkpoint(cfg, args.checkpoint, args.out, args.force,
                               args.shape, args.allow_unsafe)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    print(f"wrote {r['out']} ({r['fused_bytes'] / 2**20:.1f} MiB; training "
          f"checkpoint {r['source_bytes'] / 2**20:.1f} MiB) and "
          f"{r['deploy_config']}")
    print(f"max |fused - unfused| = {r['max_abs_diff']:.3g}  "
          f"argmax agreement = {100 * r['argmax_agreement']:.4f}% on a "
          f"{r['shape'][0]}x{r['shape'][1]} input")


if __name__ == '__main__':
    main()
