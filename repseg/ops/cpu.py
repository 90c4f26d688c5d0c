# Copyright (c) repseg contributors. All rights reserved.
"""What the CPU offers: the vector ISA that decides conv, INT8 and bf16
speed (a speed figure means little without it), and any cap put on what
PyTorch may use of it or mask hiding part of it (:mod:`.isa_mask`)."""
import os

from .isa_mask import cpu_flags, hidden_flags


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
    process sees it: when features are hidden from it (:mod:`.isa_mask`)
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


__all__ = ['ISA_FLAGS', 'ISA_CAPS', 'cpu_vector_isa', 'isa_caps', 'seen_isa']
