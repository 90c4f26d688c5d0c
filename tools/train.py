#!/usr/bin/env python
"""Train a segmentor with mmengine's Runner (one process, or several with
a launcher); RepVGG blocks train in their multi-branch form.

  python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp]
  bash tools/dist_train.sh CONFIG GPUS [--auto-scale-lr]   # several
  bash tools/slurm_train.sh PARTITION JOB CONFIG [--work-dir DIR]

An interrupted run (ctrl-c, a crash) continues with --resume from the
newest complete checkpoint in its work dir.
"""
from _cli import (add_cfg_options, add_config, add_launcher, add_unsafe_load,
                  make_parser, run)


def build_parser():
    parser = make_parser(__doc__)
    add_config(parser, 'the model, its data and its schedule')
    parser.add_argument(
        '--work-dir',
        help='The folder for logs and checkpoints (default: '
        'work_dirs/<config name>).')
    parser.add_argument(
        '--resume', action='store_true',
        help='Resume from the newest complete checkpoint in the work dir.')
    parser.add_argument(
        '--amp', action='store_true',
        help='Train with automatic mixed precision (needs a CUDA GPU).')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='Scale the learning rate linearly with the actual global batch '
        "(processes x batch per process) against the config's base of 16.")
    add_unsafe_load(parser, 'a checkpoint (load_from or --resume)')
    add_cfg_options(parser)
    add_launcher(parser)
    return parser


def main(argv=None):
    def train(args):
        from repseg.apis import load_cfg, train
        train(load_cfg(args.config, args.work_dir, args.cfg_options,
                       args.launcher, args.amp, args.resume,
                       args.auto_scale_lr),
              allow_unsafe=args.allow_unsafe)

    run(build_parser(), train, argv)


if __name__ == '__main__':
    main()
