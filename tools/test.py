#!/usr/bin/env python
"""Evaluate a checkpoint (training or fused deploy) on the FUSED model:
python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR]
[--show-dir DIR] [--conv-impl auto|nnpack|nnpack-precomputed|native]
[--cfg-options k=v ...] [--launcher pytorch]"""
import argparse
import os
import sys

from _cli import CfgOptions as DictAction


def build_parser():
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a segmentor, fused')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        help='training checkpoint (fused on load), fused deploy checkpoint, '
        'or an exported model, fp32 or INT8: .onnx (evaluated with ONNX '
        'Runtime) or OpenVINO IR .xml (with its .bin next to it)')
    parser.add_argument('--work-dir', help='the dir to save logs')
    parser.add_argument(
        '--out', help='dir to save the predicted label maps (PNG)')
    parser.add_argument(
        '--show-dir', help='dir to save the prediction overlays (PNG)')
    parser.add_argument(
        '--conv-impl',
        choices=['auto', 'nnpack', 'nnpack-precomputed', 'native'],
        help='3x3 convs of the fused model: nnpack = Winograd on the CPU, '
        'nnpack-precomputed = the same with the kernel transforms kept '
        "(faster, more memory), native = PyTorch's default, auto (the "
        "config's FusedEvalHook default) = nnpack on CPU fp32")
    parser.add_argument(
        '--unsafe-load', dest='allow_unsafe', action='store_true',
        help='allow full unpickling of a checkpoint that needs it (it can '
        'run code from the file: only for files you trust)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    from repseg.apis import load_cfg, test
    from repseg.errors import RepsegError
    try:
        cfg = load_cfg(args.config, args.work_dir, args.cfg_options,
                       args.launcher)
        test(cfg, args.checkpoint, out=args.out, show_dir=args.show_dir,
             allow_unsafe=args.allow_unsafe, conv_impl=args.conv_impl)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')


if __name__ == '__main__':
    main()
