# Copyright (c) repseg contributors. All rights reserved.
"""What the CPU offers: the vector ISA that decides conv, INT8 and bf16
speed (a speed figure means little without it), and any cap put on what
PyTorch may use of it."""
import os


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
    'AVX2' (from /proc/cpuinfo; 'unknown' where it cannot be read), followed
    by the caps on PyTorch's kernels when any is set (``with_caps``): e.g.
    'AVX-512 VNNI BF16 AMX (PyTorch capped: ONEDNN_MAX_CPU_ISA=AVX2)'."""
    isa = _hardware_isa(cpuinfo)
    caps = isa_caps() if with_caps else ''
    return f'{isa} (PyTorch capped: {caps})' if caps else isa


def _hardware_isa(cpuinfo: str) -> str:
    try:
        with open(cpuinfo) as f:
            flags = next((ln.split(':', 1)[1].split() for ln in f
                          if ln.startswith('flags')), [])
    except OSError:
        return 'unknown'
    have = set(flags) & set(ISA_FLAGS)
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


__all__ = ['ISA_FLAGS', 'ISA_CAPS', 'cpu_vector_isa', 'isa_caps']
