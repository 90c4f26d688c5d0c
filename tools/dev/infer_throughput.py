#!/usr/bin/env python
"""A developer's instrument: how fast tools/infer.py segments a folder with
each model file, against the network alone: model-only vs end to end (with
and without the pipeline), latency vs throughput mode, 1 and 2 threads;
medians of interleaved rounds, the CPU's ISA beside the figures.

  python tools/dev/infer_throughput.py FOLDER --models a.xml b.onnx \\
      --threads 1 2 --rounds 3
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folder', help='A folder of images (searched '
                   'recursively).')
    p.add_argument('--models', nargs='+', required=True,
                   help='Deployed model files (.onnx, .xml).')
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                   help='Thread counts to measure (default: 1 2).')
    p.add_argument('--rounds', type=int, default=3,
                   help='Interleaved rounds; medians are reported '
                   '(default 3).')
    return p


def main(argv=None):
    from _cli import run

    def study(args):
        from repseg.infer.engine import InferSettings, plan
        from repseg.infer.throughput import measure, table
        from repseg.ops.cpu import cpu_vector_isa
        rows = measure(args.models, args.folder, args.threads, args.rounds)
        total = plan([args.folder], InferSettings(recursive=True))[1]
        print(table(rows, cpu_vector_isa(), total, args.rounds))

    run(build_parser(), study, argv)


if __name__ == '__main__':
    main()
