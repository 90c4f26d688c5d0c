#!/usr/bin/env python
"""Export the fused segmentor for a runtime and verify it against PyTorch:
ONNX (ONNX Runtime) or OpenVINO IR (.xml + .bin).

  python tools/export.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
  python tools/export.py CONFIG CHECKPOINT OUT.xml --backend openvino
  python tools/export.py CONFIG CHECKPOINT OUT.onnx --fixed-shape --shape H W

The file records what it is (config, backbone, decoder, classes, input
size; tools/test.py refuses it for another config or size); next to it,
OUT.json describes the same and its input (name, layout, channel order,
mean/std) and output.
"""
from _cli import (add_backend, add_cfg_options, add_config, add_force,
                  add_dynamic_shape, add_shape, add_unsafe_load, make_parser,
                  run)


def build_parser(prog=None):
    p = make_parser(__doc__, prog)
    add_config(p)
    p.add_argument('checkpoint', help='A training or fused checkpoint.')
    p.add_argument('out', help='The file to write: NAME.onnx for ONNX '
                   'Runtime, NAME.xml (and NAME.bin) for OpenVINO.')
    add_backend(p, 'The runtime the file is for (default: the one whose '
                'files end like OUT, .onnx or .xml)')
    add_shape(p, 'the exported model (the size a dynamic file is traced '
              'and verified at)')
    add_dynamic_shape(p)
    p.add_argument('--opset', type=int,
                   help='The ONNX opset to export with (default '
                   '%(default)s).')
    add_force(p, 'OUT and its companion files (.bin, .json)')
    add_unsafe_load(p)
    add_cfg_options(p)
    from repseg.apis import ExportSettings
    ExportSettings.defaults_into(p)
    return p


def main(argv=None, prog=None):
    def export(args):
        from repseg.apis import (ExportSettings, export, export_summary,
                                 load_cfg)
        r = export(load_cfg(args.config, cfg_options=args.cfg_options),
                   args.checkpoint, args.out, ExportSettings.of(vars(args)))
        print('\n'.join(export_summary(r)))

    run(build_parser(prog), export, argv)


if __name__ == '__main__':
    main()
