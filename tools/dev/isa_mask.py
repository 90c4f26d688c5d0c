# Copyright (c) repseg contributors. All rights reserved.
"""Run a command as if the CPU had a smaller vector ISA (a developer's
measuring instrument, not part of the installed package; used by
tools/dev/cpu_isa.py).

INT8 and bf16 speed (and U8S8 INT8 accuracy: without VNNI, ONNX Runtime's
kernels add products in saturating int16) depend on the CPU's vector
extensions, and ONNX Runtime has no switch to cap them (PyTorch has
``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``). :func:`masked_env` gives
an environment in which a small LD_PRELOAD library (``cpuid_mask.c``, built
with the C compiler on first use) hides the named extensions from the
``cpuid`` instruction with Linux's CPUID faulting, so every library of the
process (MLAS, oneDNN, ATen, MKL) picks the kernels it would pick on such a
CPU. What runs is that code path on THIS core: a stand-in for an AVX2-only
machine's kernels, not for its clock or caches.
"""
import hashlib
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

from repseg.errors import BackendError, UsageError
from repseg.ops.cpu import HIDDEN_ENV, MASK_LIB_PREFIX, cpu_flags

#: /proc/cpuinfo flag -> (cpuid leaf, subleaf, register, bit) of the vector
#: extensions above AVX2 (Intel SDM vol. 2A, CPUID leaf 07H)
FEATURE_BITS: Dict[str, Tuple[int, int, str, int]] = {
    'avx512f': (7, 0, 'ebx', 16),
    'avx512dq': (7, 0, 'ebx', 17),
    'avx512ifma': (7, 0, 'ebx', 21),
    'avx512pf': (7, 0, 'ebx', 26),
    'avx512er': (7, 0, 'ebx', 27),
    'avx512cd': (7, 0, 'ebx', 28),
    'avx512bw': (7, 0, 'ebx', 30),
    'avx512vl': (7, 0, 'ebx', 31),
    'avx512vbmi': (7, 0, 'ecx', 1),
    'avx512_vbmi2': (7, 0, 'ecx', 6),
    'avx512_vnni': (7, 0, 'ecx', 11),
    'avx512_bitalg': (7, 0, 'ecx', 12),
    'avx512_vpopcntdq': (7, 0, 'ecx', 14),
    'avx512_4vnniw': (7, 0, 'edx', 2),
    'avx512_4fmaps': (7, 0, 'edx', 3),
    'avx512_vp2intersect': (7, 0, 'edx', 8),
    'amx_bf16': (7, 0, 'edx', 22),
    'avx512_fp16': (7, 0, 'edx', 23),
    'amx_tile': (7, 0, 'edx', 24),
    'amx_int8': (7, 0, 'edx', 25),
    'avx_vnni': (7, 1, 'eax', 4),
    'avx512_bf16': (7, 1, 'eax', 5),
    'amx_fp16': (7, 1, 'eax', 21),
    'avx_vnni_int8': (7, 1, 'edx', 4),
    'avx_ne_convert': (7, 1, 'edx', 5),
}

_AVX512 = ('avx512f', 'avx512dq', 'avx512cd', 'avx512bw', 'avx512vl')
_ICE_LAKE = _AVX512 + ('avx512_vnni', 'avx512ifma', 'avx512vbmi',
                       'avx512_vbmi2', 'avx512_bitalg', 'avx512_vpopcntdq')

#: what each level keeps of FEATURE_BITS (everything else is hidden)
LEVELS: Dict[str, Tuple[str, ...]] = {
    # Haswell .. Comet Lake, AMD Zen 1-3: AVX2 + FMA, no VNNI
    'avx2': (),
    # Skylake-SP / Cascade Lake without VNNI: AVX-512, int8 without VNNI
    'avx512': _AVX512,
    # Ice Lake: AVX-512 with VNNI, no bf16
    'avx512_vnni': _ICE_LAKE,
    # Cooper Lake, AMD Zen 4: AVX-512 VNNI and BF16, no AMX
    'avx512_bf16': _ICE_LAKE + ('avx512_bf16', ),
}

ENV_MASK = 'REPSEG_CPUID_MASK'
_SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'cpuid_mask.c')
_LIB_PREFIX = MASK_LIB_PREFIX


def hidden_by(level: str) -> List[str]:
    """The /proc/cpuinfo flags ``level`` hides, in table order."""
    if level not in LEVELS:
        raise UsageError(f'unknown ISA level {level!r}: choose one of '
                         f'{", ".join(LEVELS)}')
    keep = set(LEVELS[level])
    return [f for f in FEATURE_BITS if f not in keep]


def mask_spec(flags: List[str]) -> str:
    """The ``REPSEG_CPUID_MASK`` value hiding ``flags``, e.g.
    ``'7.0.ebx=0x10000'``."""
    bits: Dict[Tuple[int, int, str], int] = {}
    for flag in flags:
        leaf, sub, reg, bit = FEATURE_BITS[flag]
        bits[leaf, sub, reg] = bits.get((leaf, sub, reg), 0) | (1 << bit)
    return ','.join(f'{leaf}.{sub}.{reg}={mask:#x}'
                    for (leaf, sub, reg), mask in bits.items())


def flags_of_spec(spec: str) -> List[str]:
    """The FEATURE_BITS flags a ``REPSEG_CPUID_MASK`` value hides."""
    hidden = set()
    for item in filter(None, spec.split(',')):
        try:
            where, mask = item.split('=')
            leaf, sub, reg = where.split('.')
            key, mask = (int(leaf, 0), int(sub, 0), reg), int(mask, 0)
        except ValueError:
            continue
        hidden.update(f for f, (*k, bit) in FEATURE_BITS.items()
                      if tuple(k) == key and mask >> bit & 1)
    return [f for f in FEATURE_BITS if f in hidden]


def cpuid_faulting_available(cpuinfo: str = '/proc/cpuinfo') -> bool:
    """Whether the kernel reports CPUID faulting (flag ``cpuid_fault``)."""
    return 'cpuid_fault' in (cpu_flags(cpuinfo) or ())


def mask_library(cache_dir: Optional[str] = None) -> str:
    """Path of the compiled mask library (built once per source version in
    ``cache_dir``, default ``~/.cache/repseg``)."""
    if sys.platform != 'linux' or os.uname().machine != 'x86_64':
        raise BackendError('hiding CPU features needs Linux on x86-64 (CPUID '
                           f'faulting); this is {sys.platform} '
                           f'{os.uname().machine}')
    with open(_SOURCE, 'rb') as f:
        source = f.read()
    cache_dir = cache_dir or osp.join(
        os.environ.get('XDG_CACHE_HOME', osp.expanduser('~/.cache')),
        'repseg')
    lib = osp.join(cache_dir,
                   f'{_LIB_PREFIX}{hashlib.sha1(source).hexdigest()[:12]}.so')
    if osp.exists(lib):
        return lib
    cc = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
    if not cc:
        raise BackendError('hiding CPU features builds a small C library '
                           'and no C compiler was found: install gcc (e.g. '
                           'apt-get install gcc) or set CC')
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=cache_dir)
    os.close(fd)
    try:
        done = subprocess.run([cc, '-O2', '-shared', '-fPIC', '-o', tmp,
                               _SOURCE, '-ldl'],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BackendError(f'{cc} could not build {_SOURCE}:\n'
                               f'{done.stderr.strip()}')
        os.replace(tmp, lib)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return lib


def masked_env(level: str, env: Optional[Mapping[str, str]] = None,
               cache_dir: Optional[str] = None) -> Dict[str, str]:
    """A copy of ``env`` (default: os.environ) in which a process sees the
    CPU as ``level`` (one of :data:`LEVELS`): the mask library preloaded and
    ``REPSEG_CPUID_MASK`` naming what it hides."""
    flags = hidden_by(level)
    if not cpuid_faulting_available():
        raise BackendError('this CPU or kernel has no CPUID faulting (no '
                           "'cpuid_fault' in /proc/cpuinfo): features "
                           'cannot be hidden here; run on the smaller CPU '
                           'itself')
    lib = mask_library(cache_dir)
    env = dict(os.environ if env is None else env)
    preload = [p for p in env.get('LD_PRELOAD', '').split(':')
               if p and _LIB_PREFIX not in p]
    env['LD_PRELOAD'] = ':'.join([lib] + preload)
    env[ENV_MASK] = mask_spec(flags)
    # what the ISA label of repseg.ops.cpu reports as hidden
    env[HIDDEN_ENV] = ','.join(flags)
    return env


__all__ = [
    'FEATURE_BITS', 'LEVELS', 'ENV_MASK', 'hidden_by', 'mask_spec',
    'flags_of_spec', 'cpu_flags', 'cpuid_faulting_available',
    'mask_library', 'masked_env'
]
