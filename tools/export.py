#!/usr/bin/env python
"""Export the fused segmentor for a runtime and verify it against PyTorch:
ONNX (ONNX Runtime) or OpenVINO IR (.xml + .bin).

  python tools/export.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
  python tools/export.py CONFIG CHECKPOINT OUT.xml --backend openvino

Next to the model, OUT.json describes its input (name, layout, channel
order, mean/std, size) and output (classes).
"""
import argparse
import sys

from _cli import CfgOptions as DictAction


def build_parser(prog=None):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='the config of the model')
    p.add_argument('checkpoint', help='training or fused checkpoint')
    p.add_argument('out', help='the file to write: NAME.onnx for '
                   'onnxruntime, NAME.xml (and NAME.bin) for openvino')
    p.add_argument('--backend', choices=['onnxruntime', 'openvino'],
                   help='the runtime the file is for (default: from the '
                   'suffix of OUT, .onnx -> onnxruntime, .xml -> openvino)')
    p.add_argument('--shape', type=int, nargs='+', default=[713, 713],
                   metavar='S', help='input H W, or one side for a square '
                   '(default 713 713)')
    p.add_argument('--dynamic-shape', action='store_true',
                   help='make H and W dynamic too (the batch axis always '
                   'is); refused for adaptive pooling pyramids (PSPNet)')
    p.add_argument('--opset', type=int, default=17,
                   help='the ONNX opset to export with (default 17)')
    p.add_argument('--force', action='store_true',
                   help='overwrite OUT (and its companion files)')
    p.add_argument('--unsafe-load', dest='allow_unsafe',
                   action='store_true',
                   help='allow full unpickling of a checkpoint that needs it '
                   '(only for files you trust)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config, key=value')
    return p


def main(argv=None, prog=None):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from repseg.deploy import export_model
    from repseg.deploy.runtimes import runtime_of_file
    from repseg.engine import load_cfg
    from repseg.errors import RepsegError
    backend = args.backend
    if backend is None:
        found = runtime_of_file(args.out)
        backend = found.name if found else 'onnxruntime'
    try:
        cfg = load_cfg(args.config, cfg_options=args.cfg_options)
        r = export_model(cfg, args.checkpoint, args.out, args.shape,
                         args.dynamic_shape, args.opset, args.force,
                         allow_unsafe=args.allow_unsafe, backend=backend)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    info = r['runtime']
    print(f"wrote {' + '.join(r['files'])} ({r['bytes'] / 2**20:.1f} MiB); "
          f"its input and output are described in {r['spec']}")
    print(f"{info['runtime']} ({info['precision']}, {info['threads']} "
          f"threads) vs PyTorch on a {r['shape'][0]}x{r['shape'][1]} input: "
          f"max |difference| = {r['max_abs_diff']:.3g} (max |logit| "
          f"{r['max_abs']:.3g}, relative {r['relative']:.2g}), argmax "
          f"agreement {100 * r['argmax_agreement']:.4f}%")


if __name__ == '__main__':
    main()
