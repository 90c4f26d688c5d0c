#!/usr/bin/env python
"""A developer's instrument: the CPU's vector ISA, and running a command as
if it had a smaller one (its extensions hidden from `cpuid`, so ONNX
Runtime, OpenVINO, oneDNN and ATen pick that CPU's kernels):

  python tools/dev/cpu_isa.py                    # the ISA and the levels
  python tools/dev/cpu_isa.py --as avx2 -- python tools/benchmark.py CONFIG \\
      --backend onnxruntime openvino --int8
"""
import argparse
import os
import os.path as osp
import shutil
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))


def build_parser():
    from isa_mask import LEVELS
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--as', dest='level', choices=list(LEVELS),
                   help='The ISA the command sees: avx2 (Haswell..Comet '
                   'Lake, Zen 1-3), avx512 (Skylake-SP), avx512_vnni (Ice '
                   'Lake) or avx512_bf16 (Cooper Lake, Zen 4).')
    p.add_argument('command', nargs=argparse.REMAINDER,
                   help='The command to run (after --).')
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from repseg.errors import RepsegError
    from repseg.ops.cpu import cpu_vector_isa
    from isa_mask import (LEVELS, cpuid_faulting_available, hidden_by,
                          masked_env)
    command = args.command[1:] if args.command[:1] == ['--'] else \
        args.command
    if not args.level:
        if command:
            parser.error('a command needs --as LEVEL')
        print(f'vector ISA: {cpu_vector_isa()}')
        print('cpuid faulting (needed by --as): '
              f"{'yes' if cpuid_faulting_available() else 'no'}")
        for level in LEVELS:
            print(f'--as {level}: hides {" ".join(hidden_by(level))}')
        return
    if not command:
        parser.error('--as needs a command to run after --')
    program = shutil.which(command[0])
    if not program:
        sys.exit(f'error: cannot run {command[0]!r}: no such program '
                 '(give a path or a name on PATH)')
    try:
        env = masked_env(args.level)
    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
    os.execve(program, command, env)


if __name__ == '__main__':
    main()
