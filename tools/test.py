#!/usr/bin/env python
"""Evaluate a checkpoint on the FUSED model with the config's test loop
(mmseg's metrics): a training checkpoint is fused on load, a fused deploy
checkpoint is built in its fused form, an exported model (.onnx, OpenVINO
.xml; fp32 or INT8) runs in its runtime.

  python tools/test.py CONFIG CHECKPOINT [--out DIR] [--show-dir DIR]
  python tools/test.py CONFIG CHECKPOINT --tta        # several scales, flip
  python tools/test.py CONFIG MODEL.onnx              # or MODEL.xml
  bash tools/dist_test.sh CONFIG CHECKPOINT GPUS      # several processes
"""
from _cli import (add_cfg_options, add_config, add_launcher, add_unsafe_load,
                  make_parser, run)


def build_parser():
    parser = make_parser(__doc__)
    add_config(parser, 'the model and its test data')
    parser.add_argument(
        'checkpoint',
        help='A training checkpoint (fused on load), a fused deploy '
        'checkpoint, or an exported model, fp32 or INT8: .onnx (evaluated '
        'with ONNX Runtime) or OpenVINO IR .xml (with its .bin next to it).')
    parser.add_argument(
        '--work-dir',
        help='The folder for the log (default: work_dirs/<config name>).')
    parser.add_argument(
        '--out',
        help='A folder to save the predicted label maps in (PNG, train ids; '
        'for offline evaluation).')
    parser.add_argument(
        '--show', action='store_true',
        help='Show each prediction in a window (needs a display; without '
        'one, use --show-dir).')
    parser.add_argument(
        '--show-dir',
        help='A folder to save prediction overlays in (PNG: image, '
        'prediction and ground truth).')
    parser.add_argument(
        '--wait-time', type=float,
        help='Seconds each window of --show stays open (default '
        '%(default)s).')
    parser.add_argument(
        '--tta', action='store_true',
        help="Test-time augmentation: the config's tta_pipeline (several "
        'scales and flips), merged by its tta_model (mmseg\'s SegTTAModel).')
    parser.add_argument(
        '--conv-impl',
        choices=['auto', 'nnpack', 'nnpack-precomputed', 'native'],
        help='How the 3x3 convs of the fused model run: nnpack = Winograd on '
        'the CPU, nnpack-precomputed = the same with the kernel transforms '
        "kept (faster, more memory), native = PyTorch's own, auto (the "
        "config's FusedEvalHook default) = nnpack on CPU fp32.")
    add_unsafe_load(parser)
    add_cfg_options(parser)
    add_launcher(parser)
    from repseg.apis import TestSettings
    TestSettings.defaults_into(parser)
    return parser


def main(argv=None):
    def test(args):
        from repseg.apis import TestSettings, load_cfg, test
        test(load_cfg(args.config, args.work_dir, args.cfg_options,
                      args.launcher),
             args.checkpoint, TestSettings.of(vars(args)))

    run(build_parser(), test, argv)


if __name__ == '__main__':
    main()
