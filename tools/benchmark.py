#!/usr/bin/env python
"""Speed test of fused segmentors, side by side: by default the RepVGG
paper's Table 8 line-up (PSPNets at 713x713 with their ResNet baselines),
or any one config; in PyTorch and, with --backend, in ONNX Runtime and
OpenVINO (fp32, --bf16, --int8).

  python tools/benchmark.py                       # the Table 8 line-up
  python tools/benchmark.py --fast                # the -fast rows + ResNets
  python tools/benchmark.py CONFIG [CHECKPOINT]   # one model
  python tools/benchmark.py CONFIG --backend openvino onnxruntime --int8
"""
import argparse
import sys

from _cli import CfgOptions as DictAction


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', help='config of one model to time')
    p.add_argument('checkpoint', nargs='?',
                   help='its checkpoint (training or fused); must exist')
    p.add_argument('--fast', action='store_true',
                   help="switch RepVGG backbones to 'fast' dilation; with no "
                   'config: the -fast rows and their ResNet baselines')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1, ...')
    p.add_argument('--batch-size', type=int,
                   help='images per batch (default: 16 on GPU, 1 on CPU)')
    p.add_argument('--shape', type=int, nargs='+', default=[713, 713],
                   metavar='S', help='input H W (or one side); 713 713')
    p.add_argument('--warmup', type=int,
                   help='warm-up batches per model (default 50 GPU, 1 CPU)')
    p.add_argument('--iters', type=int,
                   help='timed batches per model and round (50 GPU, 2 CPU)')
    p.add_argument('--repeat', type=int, default=3,
                   help='interleaved timing rounds (default 3)')
    p.add_argument('--dtype', choices=['fp32', 'fp16', 'bf16'],
                   default='fp32', help='precision of the fused model')
    p.add_argument('--amp', action='store_true', help='autocast the forward')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true', help='torch.compile')
    p.add_argument('--compare-unfused', action='store_true',
                   help='also time the training-time (unfused) form')
    p.add_argument('--backend', nargs='+', default=['pytorch'],
                   choices=['pytorch', 'onnxruntime', 'openvino'],
                   help='runtimes to time next to PyTorch (always timed): '
                   'each fused model is exported to ONNX (and OpenVINO IR) '
                   'and run on the CPU with the same thread count')
    p.add_argument('--int8', action='store_true',
                   help="with --backend: also time each runtime's INT8 model "
                   '(ONNX Runtime: static QDQ, per-channel weights; '
                   'OpenVINO: NNCF), calibrated on random inputs (timing '
                   'only; accuracy: tools/quantize.py)')
    p.add_argument('--bf16', action='store_true',
                   help='also time a bf16 copy of each fused model in '
                   'PyTorch and, with --backend openvino, in OpenVINO '
                   '(CPUs with AVX512_BF16 or AMX)')
    p.add_argument('--conv-impl',
                   choices=['auto', 'nnpack', 'nnpack-precomputed',
                            'native'],
                   default='auto',
                   help='3x3 convs: nnpack = Winograd, nnpack-precomputed = '
                   'with kernel transforms kept (faster, 64/9 x the 3x3 '
                   'weight memory), native = PyTorch; auto (default) = '
                   'nnpack on CPU fp32')
    p.add_argument('--compare-conv-impl', action='store_true',
                   help='also time each fused model with native convs')
    p.add_argument('--profile', action='store_true',
                   help='also time one forward of every model by layer kind '
                   '(dilated/plain/grouped 3x3, 1x1, BN, ...) and by part '
                   '(backbone, decode head); table + profile.png')
    p.add_argument('--no-flops', action='store_true', help='skip GFLOPs')
    p.add_argument('--out', default='work_dirs/benchmark',
                   help='folder for benchmark.json and benchmark.png')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from repseg.benchmark import (BenchmarkSettings, lineup, markdown_table,
                                  profile_table, run_benchmark, save_outputs)
    from repseg.errors import RepsegError
    entries = lineup(args.fast, args.config, args.checkpoint,
                     args.cfg_options)
    try:
        settings = BenchmarkSettings.of(vars(args), flops=not args.no_flops)
        result = run_benchmark(entries, settings)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    print()
    print(markdown_table(result))
    profiled = profile_table(result)
    if profiled:
        print()
        print(profiled)
    files = save_outputs(result, args.out)
    print(f"\nwrote {', '.join(files.values())}")


if __name__ == '__main__':
    main()
