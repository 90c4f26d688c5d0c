# Copyright (c) repseg contributors. All rights reserved.
"""What the CPU offers: the vector ISA that decides conv, INT8 and bf16
speed (a speed figure means little without it), and any cap put on what
PyTorch may use of it or mask hiding part of it (the developers' instrument
tools/dev/cpu_isa.py)."""
import os
from typing import List, Optional

#: set by tools/dev/cpu_isa.py: the /proc/cpuinfo flags it hides from cpuid
HIDDEN_ENV = 'REPSEG_CPUID_HIDDEN'
#: file-name prefix of its preloaded mask library
MASK_LIB_PREFIX = 'repseg-cpuid-mask-'


def cpu_flags(cpuinfo: str = '/proc/cpuinfo') -> Optional[set]:
    """The flags the kernel reports for the CPU (the first ``flags`` line of
    ``cpuinfo``: the hardware's, whatever is hidden from cpuid), or None
    where the file cannot be read."""
    try:
        with open(cpuinfo) as f:
            return set(next((ln.split(':', 1)[1].split() for ln in f
                             if ln.startswith('flags')), []))
    except OSError:
        return None


def hidden_flags() -> List[str]:
    """The flags hidden from THIS process by tools/dev/cpu_isa.py (its mask
    library is loaded and ``REPSEG_CPUID_HIDDEN`` names them), or []."""
    hidden = [f for f in os.environ.get(HIDDEN_ENV, '').split(',') if f]
    if not hidden:
        return []
    try:
        with open('/proc/self/maps') as f:
            loaded = MASK_LIB_PREFIX in f.read()
    except OSError:
        loaded = False
    return hidden if loaded else []


#: the vector extensions that decide conv, INT8 and bf16 speed on x86
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16',
             'amx_tile', 'amx_int8', 'amx_bf16')


#: environment variables that cap the ISA PyTorch's kernels (ATen, oneDNN)
#: use; ONNX Runtime has no such switch
ISA_CAPS = ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA')


def isa_caps() -> str:
    """The ISA caps in effect (e.g. 'ONEDNN_MAX_CPU_ISA=AVX2'), or ''."""
    return ', '.join(f'{k}={os.environ[k]}' for k in ISA_CAPS
                     if os.environ.get(k))


def cpu_vector_isa(cpuinfo: str = '/proc/cpuinfo',
                   with_caps: bool = True) -> str:
    """The CPU's vector ISA as one label, e.g. 'AVX-512 VNNI BF16' or
    'AVX2' (from /proc/cpuinfo; 'unknown' where it cannot be read), as this
    process sees it: when features are hidden from it (tools/dev/cpu_isa.py)
    the label is what is left, followed by what the hardware has, e.g.
    'AVX2 (masked; hardware: AVX-512 VNNI BF16 AMX)'. Then the caps on
    PyTorch's kernels when any is set (``with_caps``): e.g.
    'AVX-512 VNNI BF16 AMX (PyTorch capped: ONEDNN_MAX_CPU_ISA=AVX2)'."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        isa = 'unknown'
    else:
        isa = _label(flags)
        hidden = set(hidden_flags())
        if hidden & flags:
            isa = f'{_label(flags - hidden)} (masked; hardware: {isa})'
    caps = isa_caps() if with_caps else ''
    return f'{isa} (PyTorch capped: {caps})' if caps else isa


def seen_isa(label: str) -> str:
    """The part of a :func:`cpu_vector_isa` label the process can use (what
    is left when features are masked, without caps), e.g. 'AVX2' of
    'AVX2 (masked; hardware: AVX-512 VNNI BF16 AMX)'."""
    return label.split(' (')[0]


def _label(flags: set) -> str:
    have = flags & set(ISA_FLAGS)
    if not have:
        return 'no AVX2'
    parts = ['AVX-512' if 'avx512f' in have else 'AVX2']
    if have & {'avx512_vnni', 'avx_vnni'}:
        parts.append('VNNI')
    if 'avx512_bf16' in have:
        parts.append('BF16')
    if have & {'amx_tile', 'amx_int8', 'amx_bf16'}:
        parts.append('AMX')
    return ' '.join(parts)


__all__ = ['ISA_FLAGS', 'ISA_CAPS', 'cpu_vector_isa', 'isa_caps', 'seen_isa',
           'cpu_flags', 'hidden_flags']
