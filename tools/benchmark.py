#!/usr/bin/env python
"""Speed test of fused segmentors, side by side: by default the RepVGG
paper's Table 8 line-up (PSPNets at 713x713 with their ResNet baselines;
its configs are looked for in $REPSEG_CONFIGS, then ./configs), or the
configs given (at their test size); in PyTorch and, with --backend, in
ONNX Runtime and OpenVINO (fp32, --dtype fp32 bf16, --int8).

  python tools/benchmark.py                       # the Table 8 line-up
  python tools/benchmark.py --fast                # the -fast rows + ResNets
  python tools/benchmark.py CONFIG [CHECKPOINT]   # one model
  python tools/benchmark.py CONFIG [CKPT] CONFIG [CKPT] ...   # side by side
  python tools/benchmark.py CONFIG --backend openvino onnxruntime --int8
"""
from _cli import (add_backend, add_cfg_options, add_shape, make_parser,
                  remove_flag, run)


def _add_runtime_flags(p):
    """--backend and what the runtimes' rows take."""
    from repseg.apis import PYTORCH
    add_backend(p, 'Runtimes to time next to PyTorch (always timed; each '
                'fused model is exported to ONNX and converted to each '
                "runtime's file, run on the CPU with the same thread count)",
                nargs='+', default=[PYTORCH], extra=[(PYTORCH, 'PyTorch')])
    p.add_argument('--int8', action='store_true',
                   help="With --backend: also time each runtime's INT8 model "
                   '(ONNX Runtime: static QDQ, per-channel weights; '
                   'OpenVINO: NNCF), calibrated on random inputs (timing '
                   'only; for accuracy use tools/quantize.py).')
    p.add_argument('--equalize', choices=['off', 'activation', 'cle'],
                   help='With --int8: also time the INT8 model of the '
                   'equalized fused model (tools/quantize.py --equalize), '
                   'side by side with the plain one (default %(default)s).')
    p.add_argument('--throughput', type=int, metavar='N',
                   help='With --backend: also time each runtime in '
                   'throughput mode with N images in flight (the streams '
                   'and requests it chooses, read back; default %(default)s: '
                   'not).')


def build_parser():
    p = make_parser(__doc__)
    p.add_argument('models', nargs='*', metavar='CONFIG [CHECKPOINT]',
                   help='The configs of the models to time, each followed '
                   'by its checkpoint, training or fused, if it has one '
                   '(default: random weights; speed does not depend on '
                   'them). Several configs are timed side by side, '
                   'compared with the one ResNet among them if there is '
                   'one. Default: the Table 8 line-up.')
    p.add_argument('--fast', action='store_true',
                   help="Switch RepVGG backbones to 'fast' dilation; with no "
                   'config: the -fast rows and their ResNet baselines.')
    p.add_argument('--device',
                   help='The device to time on: cpu, cuda, cuda:1, ... '
                   '(default %(default)s).')
    p.add_argument('--batch-size', type=int,
                   help='Images per batch (default: 16 on a GPU, 1 on a '
                   'CPU).')
    add_shape(p, 'every timed model (one size for all; the Table 8 '
              'configs run 713x713)')
    p.add_argument('--warmup', type=int,
                   help='Warm-up batches per model (default: 50 on a GPU, 1 '
                   'on a CPU).')
    p.add_argument('--iters', type=int,
                   help='Timed batches per model and round (default: 50 on '
                   'a GPU, 2 on a CPU).')
    p.add_argument('--repeat', type=int,
                   help='Interleaved timing rounds (default %(default)s).')
    p.add_argument('--dtype', choices=['fp32', 'fp16', 'bf16'], nargs='+',
                   help='The precision of the fused models (default '
                   '%(default)s), '
                   'or fp32 bf16: also a bf16 copy of each fused model, '
                   'timed next to it in PyTorch and, with --backend '
                   'openvino, in OpenVINO (CPUs with AVX512_BF16 or AMX).')
    remove_flag(p, '--bf16', 'use --dtype fp32 bf16 (a bf16 copy of each '
                'model timed next to fp32)')
    p.add_argument('--amp', action='store_true',
                   help='Autocast the forward (mixed precision).')
    p.add_argument('--channels-last', action='store_true',
                   help='Run the models and inputs in channels-last memory '
                   'format (native convs).')
    p.add_argument('--compile', action='store_true',
                   help='Time torch.compile of each fused model.')
    p.add_argument('--compare-unfused', action='store_true',
                   help='Also time the training-time (unfused) form.')
    _add_runtime_flags(p)
    p.add_argument('--conv-impl',
                   choices=['auto', 'nnpack', 'nnpack-precomputed',
                            'native'],
                   help='How 3x3 convs run: nnpack = Winograd, '
                   'nnpack-precomputed = with kernel transforms kept '
                   '(faster, 64/9 x the 3x3 weight memory), native = '
                   'PyTorch; auto = nnpack on CPU fp32 (default '
                   '%(default)s).')
    p.add_argument('--compare-conv-impl', action='store_true',
                   help='Also time each fused model with native convs.')
    p.add_argument('--profile', action='store_true',
                   help='Also time one forward of every model by layer kind '
                   '(dilated/plain/grouped 3x3, 1x1, BN, ...) and by part '
                   '(backbone, decode head): a table and profile.png.')
    p.add_argument('--no-flops', action='store_true',
                   help='Skip counting GFLOPs.')
    p.add_argument('--out', default='work_dirs/benchmark',
                   help='The folder for benchmark.json and benchmark.png '
                   '(default work_dirs/benchmark).')
    add_cfg_options(p)
    from repseg.apis import BenchmarkSettings
    BenchmarkSettings.defaults_into(p)
    return p


def main(argv=None):
    def benchmark(args):
        from repseg.apis import BenchmarkSettings, benchmark
        settings = BenchmarkSettings.of(vars(args), flops=not args.no_flops)
        result = benchmark(args.models or None, None, settings, args.out,
                           args.cfg_options)
        for table in result['tables']:
            print()
            print(table)
        print(f"\nwrote {', '.join(result['files'].values())}")

    run(build_parser(), benchmark, argv)


if __name__ == '__main__':
    main()
