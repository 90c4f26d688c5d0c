#!/usr/bin/env python
"""Train a segmentor: python tools/train.py CONFIG [--work-dir DIR]
[--resume] [--amp] [--cfg-options k=v ...] [--launcher pytorch]"""
import argparse
import os
import sys

from _cli import CfgOptions as DictAction


def build_parser():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', action='store_true',
        help='resume from the newest complete checkpoint in the work dir')
    parser.add_argument(
        '--amp', action='store_true',
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate linearly with the actual global batch '
        '(base: 16)')
    parser.add_argument(
        '--unsafe-load', dest='allow_unsafe', action='store_true',
        help='allow full unpickling of a checkpoint (load_from or --resume) '
        'that needs it (it can run code from the file: only for '
        'files you trust)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value '
        '(e.g. model.backbone.init_cfg=None)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    from repseg.apis import load_cfg, train
    from repseg.errors import RepsegError
    try:
        cfg = load_cfg(args.config, args.work_dir, args.cfg_options,
                       args.launcher, args.amp, args.resume,
                       args.auto_scale_lr)
        train(cfg, allow_unsafe=args.allow_unsafe)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')


if __name__ == '__main__':
    main()
