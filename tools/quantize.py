#!/usr/bin/env python
"""INT8 model of a fused segmentor with ONNX Runtime (static QDQ, per-channel
weights, calibrated on train images), evaluated against fp32 and timed:
python tools/quantize.py CONFIG CHECKPOINT --out DIR [--calib-images 64]
[--calib-method minmax|entropy|percentile] [--calib-pipeline train|test]
[--reduce-range] [--repeat 3] [--force]"""
import argparse
import sys

from mmengine.config import DictAction


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='training or fused checkpoint')
    parser.add_argument('--out', required=True,
                        help='folder for the models, quantize.json/.md/.png')
    parser.add_argument('--calib-images', type=int, default=64,
                        help='train images to calibrate on (64)')
    parser.add_argument('--calib-method', default='minmax',
                        choices=['minmax', 'entropy', 'percentile'])
    parser.add_argument('--calib-pipeline', default='train',
                        choices=['train', 'test'],
                        help="the config's pipeline for the calibration "
                        'images (from the train split either way)')
    parser.add_argument('--reduce-range', action='store_true',
                        help='7-bit weights: for CPUs without VNNI (AVX2, '
                        "AVX-512 without VNNI), whose U8S8 kernels saturate "
                        'int16 sums; see tools/cpu_isa.py')
    parser.add_argument('--repeat', type=int, default=3,
                        help='interleaved timing rounds (3)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite the files of an earlier run in --out')
    parser.add_argument('--unsafe-load', dest='allow_unsafe',
                        action='store_true',
                        help='allow full unpickling of the checkpoint (only '
                        'for files you trust)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    from repseg.apis import check_data, quantize
    from repseg.deploy.quantize import markdown
    from repseg.engine import load_cfg
    from repseg.errors import RepsegError
    try:
        cfg = load_cfg(args.config, cfg_options=args.cfg_options)
        check_data(cfg, ('train_dataloader', 'test_dataloader'))
        result = quantize(cfg, args.checkpoint, args.out, args.calib_images,
                          args.calib_method, args.repeat, args.force,
                          args.allow_unsafe, args.calib_pipeline,
                          args.reduce_range)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    print(markdown(result))
    print(f"\nwrote {', '.join(result['files'].values())}")


if __name__ == '__main__':
    main()
