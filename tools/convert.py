#!/usr/bin/env python
"""Fuse a training checkpoint of a segmentor into a deploy checkpoint and
write its deploy config next to it; verifies fused == unfused.
python tools/convert.py CONFIG CHECKPOINT OUT.pth [--force] [--shape H W]"""
import argparse
import sys

from _cli import CfgOptions as DictAction


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='training checkpoint')
    parser.add_argument('out', help='fused checkpoint to write')
    parser.add_argument('--force', action='store_true',
                        help='overwrite OUT (and its deploy config)')
    parser.add_argument('--shape', type=int, nargs=2, default=[713, 713],
                        metavar=('H', 'W'),
                        help='input size of the verification (713 713)')
    parser.add_argument(
        '--unsafe-load', dest='allow_unsafe', action='store_true',
        help='allow full unpickling of a checkpoint that needs it (it can '
        'run code from the file: only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
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
          f"argmax agreement = {100 * r['argmax_agreement']:.4f}%")


if __name__ == '__main__':
    main()
