#!/usr/bin/env python
"""INT8 models of a fused segmentor with ONNX Runtime and/or OpenVINO + NNCF,
calibrated on train images, evaluated side by side with fp32 (and bf16 where
the runtime and CPU have it) and timed; OUT is the folder for the models and
the report (quantize.json, quantize.md, per_class_iou.png).

  python tools/quantize.py CONFIG CHECKPOINT OUT
  python tools/quantize.py CONFIG CHECKPOINT OUT --backend openvino
  python tools/quantize.py CONFIG CHECKPOINT OUT --fixed-shape --shape H W
  python tools/quantize.py CONFIG CHECKPOINT OUT \\
      --backend onnxruntime openvino --max-drop 0.2
  python tools/quantize.py CONFIG CHECKPOINT OUT \\
      --backend onnxruntime openvino --qat 300
"""
from _cli import (add_backend, add_calib_method, add_cfg_options, add_config,
                  add_dynamic_shape, add_force, add_runtime_options,
                  add_shape, add_unsafe_load, make_parser, remove_flag, run)


def build_parser():
    p = make_parser(__doc__)
    add_config(p)
    p.add_argument('checkpoint', help='A training or fused checkpoint.')
    p.add_argument('out', help='The folder for the models and the report.')
    remove_flag(p, '--out', 'give the folder OUT after CHECKPOINT '
                '(tools/quantize.py CONFIG CHECKPOINT OUT)')
    add_backend(p, 'The runtimes to quantize for, side by side (default: '
                'onnxruntime)', nargs='+')
    add_shape(p, 'the INT8 files (of the calibration inputs for files of '
              'any size)')
    add_dynamic_shape(p)
    p.add_argument('--calib-images', type=int,
                   help='How many train images to calibrate on (default '
                   '%(default)s).')
    p.add_argument('--calib-pipeline', choices=['train', 'test'],
                   help="The config's pipeline for the calibration images "
                   '(from the train split either way; default '
                   '%(default)s).')
    p.add_argument('--seed', type=int,
                   help='The seed of the calibration images and their random '
                   'transforms (default %(default)s).')
    add_calib_method(p)
    add_runtime_options(p)
    p.add_argument('--max-drop', type=float, metavar='POINTS',
                   help='OpenVINO: accuracy control; keep layers in float '
                   'until the mIoU drop on the control set is at most '
                   'POINTS (0-100).')
    p.add_argument('--control-images', type=int,
                   help='How many train images are held out of calibration '
                   'as the control set of --max-drop (default: a quarter '
                   'of the train split, at most 50).')
    p.add_argument('--equalize', choices=['activation', 'cle', 'off'],
                   help='Repair the fused model before INT8 (exact in '
                   'float; default %(default)s): activation shrinks, in '
                   'each conv -> ReLU -> conv pair, the taps that stand '
                   "out (over 4x the median channel's) by their input "
                   "channel's calibrated range, and clears the taps of "
                   'channels that never fire on the calibration images, '
                   'so (nearly) dead channels no longer set the INT8 '
                   'scale; cle is plain cross-layer equalization; off '
                   'leaves the model as it is.')
    p.add_argument('--sensitivity-images', type=int,
                   help='Calibration inputs on which the report measures '
                   'the error each conv alone causes in INT8 (its top ten '
                   'are listed; default %(default)s, 0 for none).')
    p.add_argument('--qat', type=int, metavar='ITERS',
                   help='Quantization-aware fine-tuning after the '
                   'post-training step: ITERS iterations of the config\'s '
                   'train pipeline with the INT8 quantizers simulated '
                   '(NNCF), then each runtime\'s QAT file '
                   '(model_int8_qat), written where its agreement with '
                   'fp32 on the control set is not below the post-training '
                   "file's (default %(default)s: none; a killed run resumes "
                   'from its checkpoints in OUT/qat).')
    p.add_argument('--qat-lr', type=float, metavar='LR',
                   help='The learning rate of --qat (default %(default)g, '
                   'chosen by measurement: docs/deployment.md).')
    p.add_argument('--qat-targets', choices=['fp32', 'labels'],
                   help='What --qat pulls the INT8 model to: fp32 (the '
                   "fp32 model's own labels of each training crop: INT8 "
                   'that agrees with fp32) or labels (the ground truth: '
                   'fine-tuning that also trains); default %(default)s.')
    p.add_argument('--repeat', type=int,
                   help='Interleaved timing rounds (default %(default)s).')
    add_force(p, 'the files of an earlier run in OUT')
    add_unsafe_load(p)
    add_cfg_options(p)
    from repseg.apis import QuantizeSettings
    QuantizeSettings.defaults_into(p)
    return p


def main(argv=None):
    parser = build_parser()

    def quantize(args):
        from repseg.apis import (QuantizeSettings, load_cfg, quantize,
                                 quantize_report)
        settings = QuantizeSettings.of(vars(args), backends=args.backend)
        result = quantize(load_cfg(args.config,
                                   cfg_options=args.cfg_options),
                          args.checkpoint, args.out, settings)
        print(quantize_report(result))
        print(f"\nwrote {', '.join(result['files'].values())}")

    run(parser, quantize, argv)


if __name__ == '__main__':
    main()
