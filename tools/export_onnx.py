#!/usr/bin/env python
"""Export the FUSED segmentor to ONNX, check it with onnx's checker, run it
with onnxruntime and report max |difference| from PyTorch.
python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
[--dynamic-shape] [--opset 17] [--force]"""
import argparse
import sys

from mmengine.config import DictAction


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='training or fused checkpoint')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs='+', default=[713, 713],
                        metavar='S', help='input H W (or one side)')
    parser.add_argument('--dynamic-shape', action='store_true',
                        help='dynamic H and W too (batch is always dynamic)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--force', action='store_true',
                        help='overwrite OUT')
    parser.add_argument('--unsafe-load', dest='allow_unsafe',
                        action='store_true',
                        help='allow full unpickling of a checkpoint that '
                        'needs it (only for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    from repseg.deploy import export_onnx
    from repseg.engine import load_cfg
    from repseg.errors import RepsegError
    try:
        cfg = load_cfg(args.config, cfg_options=args.cfg_options)
        r = export_onnx(cfg, args.checkpoint, args.out, args.shape,
                        args.dynamic_shape, args.opset, args.force,
                        allow_unsafe=args.allow_unsafe)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    print(f"wrote {r['out']} ({r['bytes'] / 2**20:.1f} MiB), checked with "
          f"onnx.checker; its input and output are described in {r['spec']}")
    print(f"onnxruntime vs PyTorch on a {r['shape'][0]}x{r['shape'][1]} "
          f"input: max |difference| = {r['max_abs_diff']:.3g} (max |logit| "
          f"{r['max_abs']:.3g}), argmax agreement "
          f"{100 * r['argmax_agreement']:.4f}%")


if __name__ == '__main__':
    main()
