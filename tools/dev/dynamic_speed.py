#!/usr/bin/env python
"""A developer's instrument: the speed of a ``--dynamic-shape`` file against
the fixed-size file at the fixed file's own size (the rule that made
dynamic files the default export: at least 0.95x in every cell).

For each config: the fused model (random weights: speed does not depend on
them) exported at SIZE twice, fixed and dynamic, each made into every
runtime's fp32 and INT8 file (INT8 calibrated on random inputs, as the
benchmark's ``--int8``; the fixed file quantizes its pooling, the dynamic
file keeps it in float: the fair worst case), all loaded in one process
and timed in interleaved rounds at each thread count; medians, the CPU's
ISA beside them.

  python tools/dev/dynamic_speed.py \\
      configs/pspnet_repvgg_a0_synthetic.py:128x256 \\
      configs/pspnet_repvgg_b1g2.py:713x713 --threads 1 2 --rounds 9
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('models', nargs='+', metavar='CONFIG:HxW',
                   help='Configs and the size to export and time them at.')
    p.add_argument('--backend', nargs='+', default=None,
                   help='Runtimes (default: every registered one).')
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                   help='Thread counts (default: 1 2).')
    p.add_argument('--rounds', type=int, default=9,
                   help='Interleaved rounds; medians reported (default 9).')
    p.add_argument('--iters', type=int, default=5,
                   help='Calls of one model in a row per round (default 5; '
                   'the median over them discounts the first call, which a '
                   "runtime's threads still spinning after the model before "
                   'can slow down).')
    p.add_argument('--work-dir', default='work_dirs/dynamic_speed',
                   help='Where the files are written.')
    return p


def _parse(spec):
    from repseg.errors import UsageError
    config, _, size = spec.rpartition(':')
    try:
        h, w = (int(v) for v in size.lower().split('x'))
    except ValueError:
        raise UsageError(f'{spec!r}: give CONFIG:HxW, e.g. '
                         'configs/pspnet_repvgg_a0_synthetic.py:128x256')
    return config, (h, w)


def study(args):
    import statistics

    import torch

    from repseg.apis import init_model
    from repseg.deploy.build import SegForward
    from repseg.deploy.onnx import to_onnx
    from repseg.deploy.runs import Int8Request, make_runs
    from repseg.deploy.runtimes import get_runtime
    from repseg.ops.cpu import cpu_vector_isa
    from repseg.ops.timing import contention_note, time_interleaved

    from repseg.deploy.runtimes import runtime_names
    args.backend = args.backend or runtime_names()
    runtimes = [get_runtime(n) for n in args.backend]
    lines = [f'CPU: {cpu_vector_isa()}; {args.rounds} interleaved rounds of '
             f'{args.iters} calls per model, medians', '',
             '| model | threads | runtime | precision | fixed ms '
             '| dynamic ms | speed dynamic / fixed |',
             '|---|---|---|---|---|---|---|']
    for spec in args.models:
        config, (h, w) = _parse(spec)
        name = osp.splitext(osp.basename(config))[0]
        out = osp.join(args.work_dir, f'{name}_{h}x{w}')
        module = SegForward(init_model(config).eval())
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        gen = torch.Generator().manual_seed(1)
        calib = [torch.randn(1, 3, h, w, generator=gen).numpy()
                 for _ in range(4)]
        files = {}
        for kind in ('fixed', 'dynamic'):
            onnx = osp.join(out, f'{kind}.onnx')
            to_onnx(module, x, onnx, dynamic_shape=kind == 'dynamic')
            files[kind] = onnx
        made = {}
        for kind, onnx in files.items():
            for r in make_runs(onnx, out, kind + '_{runtime}_{precision}',
                               runtimes, ['fp32', 'int8'],
                               Int8Request(calib), log=print):
                made[(r.runtime, r.precision, kind)] = r.file
        image = x.numpy()
        for threads in args.threads:
            runs = {key: get_runtime(key[0]).load(file, key[1],
                                                  threads=threads)
                    for key, file in made.items()}

            def call(model):
                return model(image)

            for fn in runs.values():
                call(fn)
            times = time_interleaved(runs, call, args.rounds, args.iters,
                                     lambda r: print(f'{name} {threads} '
                                                     f'thr: round {r + 1}'))
            note = contention_note(times)
            for rt in args.backend:
                for prec in ('fp32', 'int8'):
                    fixed = statistics.median(times[(rt, prec, 'fixed')])
                    dyn = statistics.median(times[(rt, prec, 'dynamic')])
                    lines.append(
                        f'| {name} {h}x{w} | {threads} | '
                        f'{get_runtime(rt).label} | {prec} | '
                        f'{1e3 * fixed:.1f} | {1e3 * dyn:.1f} | '
                        f'{fixed / dyn:.2f}x |')
            if note:
                lines.append(f'| {name} {threads} thr: {note} |')
    print('\n'.join(lines))
    return lines


def main(argv=None):
    from _cli import run
    run(build_parser(), study, argv)


if __name__ == '__main__':
    main()
