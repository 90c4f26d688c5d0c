# Copyright (c) repseg contributors. All rights reserved.
"""What the CPU offers: the vector ISA that decides conv, INT8 and bf16
speed (a speed figure means little without it)."""


#: the vector extensions that decide conv, INT8 and bf16 speed on x86
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16',
             'amx_tile', 'amx_int8', 'amx_bf16')


def cpu_vector_isa(cpuinfo: str = '/proc/cpuinfo') -> str:
    """The CPU's vector ISA as one label, e.g. 'AVX-512 VNNI BF16' or
    'AVX2' (from /proc/cpuinfo; 'unknown' where it cannot be read)."""
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


__all__ = ['ISA_FLAGS', 'cpu_vector_isa']
