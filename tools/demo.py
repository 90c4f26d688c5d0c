#!/usr/bin/env python
"""The main job on the embedded default (no download needed): generate a
small synthetic dataset in the Cityscapes layout, train PSPNet-RepVGG-A0 on
the CPU for a few minutes, evaluate the FUSED model and write prediction
overlays (what `make demo` runs).

  python tools/demo.py [--iters N] [--work-dir DIR [--resume]]
"""

from _cli import add_cfg_options, make_parser, run


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument(
        '--data-root', default='data/synthetic_cityscapes',
        help='Where the synthetic dataset is, or is made when missing '
        '(default data/synthetic_cityscapes).')
    parser.add_argument(
        '--work-dir',
        help='The folder for logs, checkpoints and overlays (default: '
        'work_dirs/demo/<time>).')
    parser.add_argument(
        '--resume', action='store_true',
        help='Continue the run in --work-dir from its newest checkpoint.')
    parser.add_argument(
        '--iters', type=int,
        help='Training iterations (default: the config, 300).')
    parser.add_argument(
        '--overlays', type=int, default=4,
        help='How many prediction overlays to write (default 4).')
    add_cfg_options(parser)
    return parser


def main(argv=None):
    def demo(args):
        from repseg.apis.demo import run_demo
        s = run_demo(args.data_root, args.work_dir, max_iters=args.iters,
                     num_overlays=args.overlays,
                     cfg_options=args.cfg_options, resume=args.resume)
        m = s['metrics']
        print('\n' + '=' * 72)
        print('repseg demo: PSPNet-RepVGG-A0 on the synthetic Cityscapes '
              f"layout ({s['dataset']['train']} train / "
              f"{s['dataset']['val']} val)")
        print(f"FUSED model on val: mIoU {m.get('mIoU', float('nan')):.2f}  "
              f"mAcc {m.get('mAcc', float('nan')):.2f}  "
              f"aAcc {m.get('aAcc', float('nan')):.2f}   "
              f"(chance mIoU ~{s['chance_miou']:.1f})")
        print(f"overlays: {', '.join(s['overlays'])}")
        print(f"work dir: {s['work_dir']}   total time: {s['seconds']:.0f} s")
        print('=' * 72)

    run(build_parser(), demo, argv)


if __name__ == '__main__':
    main()
