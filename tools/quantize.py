#!/usr/bin/env python
"""INT8 models of a fused segmentor with ONNX Runtime and/or OpenVINO + NNCF,
calibrated on train images, evaluated side by side with fp32 (and bf16 where
the runtime and CPU have it) and timed.

  python tools/quantize.py CONFIG CHECKPOINT --out DIR
  python tools/quantize.py CONFIG CHECKPOINT --out DIR --backend openvino
  python tools/quantize.py CONFIG CHECKPOINT --out DIR \\
      --backend onnxruntime openvino --max-drop 0.2
"""
import argparse
import sys

from _cli import CfgOptions as DictAction


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='the config of the model and its data')
    p.add_argument('checkpoint', help='training or fused checkpoint')
    p.add_argument('--out', required=True,
                   help='folder for the models and quantize.json/.md/.png')
    p.add_argument('--backend', nargs='+', default=['onnxruntime'],
                   choices=['onnxruntime', 'openvino'],
                   help='runtimes to quantize for, side by side '
                   '(default: onnxruntime)')
    p.add_argument('--calib-images', type=int, default=64,
                   help='train images to calibrate on (default 64)')
    p.add_argument('--calib-pipeline', default='train',
                   choices=['train', 'test'],
                   help="the config's pipeline for the calibration images "
                   '(from the train split either way)')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the calibration images and their random '
                   'transforms (default 0)')
    p.add_argument('--calib-method', default='minmax',
                   choices=['minmax', 'entropy', 'percentile'],
                   help='ONNX Runtime: the calibration statistic of the '
                   'activation ranges (default minmax)')
    p.add_argument('--reduce-range', action='store_true',
                   help='ONNX Runtime: 7-bit weights, for CPUs without VNNI '
                   '(AVX2, AVX-512 without VNNI), whose U8S8 kernels '
                   'saturate int16 sums')
    p.add_argument('--preset', default='performance',
                   choices=['performance', 'mixed'],
                   help='OpenVINO/NNCF: symmetric (performance, default) or '
                   'asymmetric (mixed) activations')
    p.add_argument('--full-bias-correction', dest='fast_bias_correction',
                   action='store_false',
                   help="OpenVINO/NNCF: the full bias correction instead of "
                   'the fast one (slower, sometimes more accurate)')
    p.add_argument('--ignored-types', nargs='*', default=['MatMul'],
                   metavar='TYPE',
                   help='OpenVINO/NNCF: operation types left in float '
                   "(default MatMul: the pyramid pooling's exact products; "
                   'give none to quantize everything)')
    p.add_argument('--max-drop', type=float, metavar='POINTS',
                   help='OpenVINO: accuracy control; keep layers in float '
                   'until the mIoU drop on the control set is at most '
                   'POINTS (0-100)')
    p.add_argument('--control-images', type=int,
                   help='train images held out of calibration as the '
                   'control set of --max-drop (default: a quarter of the '
                   'train split, at most 50)')
    p.add_argument('--repeat', type=int, default=3,
                   help='interleaved timing rounds (default 3)')
    p.add_argument('--force', action='store_true',
                   help='overwrite the files of an earlier run in --out')
    p.add_argument('--unsafe-load', dest='allow_unsafe',
                   action='store_true',
                   help='allow full unpickling of the checkpoint (only for '
                   'files you trust)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config, key=value')
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from repseg.apis import check_data, quantize
    from repseg.apis.quantize import check_options
    from repseg.deploy.quantize import markdown
    from repseg.engine import load_cfg
    from repseg.errors import RepsegError
    try:
        check_options(args.backend, args.max_drop)
        cfg = load_cfg(args.config, cfg_options=args.cfg_options)
        check_data(cfg, ('train_dataloader', 'test_dataloader'))
        result = quantize(
            cfg, args.checkpoint, args.out, num_calib=args.calib_images,
            method=args.calib_method, repeat=args.repeat, force=args.force,
            allow_unsafe=args.allow_unsafe,
            calib_pipeline=args.calib_pipeline,
            reduce_range=args.reduce_range, backends=args.backend,
            preset=args.preset,
            fast_bias_correction=args.fast_bias_correction,
            ignored_types=args.ignored_types, max_drop=args.max_drop,
            control_images=args.control_images, seed=args.seed)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    print(markdown(result))
    print(f"\nwrote {', '.join(result['files'].values())}")


if __name__ == '__main__':
    main()
