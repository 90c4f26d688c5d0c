#!/usr/bin/env python
"""Export the fused segmentor for a runtime and verify it against PyTorch:
ONNX (ONNX Runtime) or OpenVINO IR (.xml + .bin).

  python tools/export.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
  python tools/export.py CONFIG CHECKPOINT OUT.xml --backend openvino

The file records what it is (config, backbone, decoder, classes, input
size; tools/test.py refuses it for another config or size); next to it,
OUT.json describes the same and its input (name, layout, channel order,
mean/std) and output.
"""
import sys

from _cli import (add_cfg_options, add_config, add_force, add_shape,
                  add_unsafe_load, make_parser)


def build_parser(prog=None):
    p = make_parser(__doc__, prog)
    add_config(p)
    p.add_argument('checkpoint', help='A training or fused checkpoint.')
    p.add_argument('out', help='The file to write: NAME.onnx for ONNX '
                   'Runtime, NAME.xml (and NAME.bin) for OpenVINO.')
    p.add_argument('--backend', choices=['onnxruntime', 'openvino'],
                   help='The runtime the file is for (default: from the '
                   'suffix of OUT, .onnx -> onnxruntime, .xml -> openvino).')
    add_shape(p, 'the exported model (fixed unless --dynamic-shape)')
    p.add_argument('--dynamic-shape', action='store_true',
                   help='Make H and W dynamic too (the batch axis always '
                   'is); refused for adaptive pooling pyramids (PSPNet).')
    p.add_argument('--opset', type=int, default=17,
                   help='The ONNX opset to export with (default 17).')
    add_force(p, 'OUT and its companion files (.bin, .json)')
    add_unsafe_load(p)
    add_cfg_options(p)
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
