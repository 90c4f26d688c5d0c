#!/usr/bin/env python
"""The main job on the embedded default (no download needed): generate a
small synthetic dataset in the Cityscapes layout, train PSPNet-RepVGG-A0 on
the CPU for a few minutes, evaluate the FUSED model and write prediction
overlays.  python tools/demo.py [--iters N] [--work-dir DIR [--resume]]"""
import argparse
import sys

from _cli import CfgOptions as DictAction


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', default='data/synthetic_cityscapes',
                        help='where the synthetic dataset is (or is made)')
    parser.add_argument('--work-dir', help='default: work_dirs/demo/<time>')
    parser.add_argument('--resume', action='store_true',
                        help='continue the run in --work-dir from its newest '
                        'checkpoint')
    parser.add_argument('--iters', type=int,
                        help='training iterations (default: the config)')
    parser.add_argument('--overlays', type=int, default=4,
                        help='number of prediction overlays to write')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    from repseg.apis.demo import run_demo
    from repseg.errors import RepsegError
    try:
        s = run_demo(args.data_root, args.work_dir, max_iters=args.iters,
                     num_overlays=args.overlays, cfg_options=args.cfg_options,
                     resume=args.resume)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    m = s['metrics']
    print('\n' + '=' * 72)
    print('repseg demo: PSPNet-RepVGG-A0 on the synthetic Cityscapes layout '
          f"({s['dataset']['train']} train / {s['dataset']['val']} val)")
    print(f"FUSED model on val: mIoU {m.get('mIoU', float('nan')):.2f}  "
          f"mAcc {m.get('mAcc', float('nan')):.2f}  "
          f"aAcc {m.get('aAcc', float('nan')):.2f}   "
          f"(chance mIoU ~{s['chance_miou']:.1f})")
    print(f"overlays: {', '.join(s['overlays'])}")
    print(f"work dir: {s['work_dir']}   total time: {s['seconds']:.0f} s")
    print('=' * 72)


if __name__ == '__main__':
    main()
