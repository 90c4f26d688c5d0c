"""The CPU's vector ISA label that every speed figure carries."""
import pytest

from repseg.ops.cpu import ISA_CAPS, cpu_vector_isa


@pytest.mark.parametrize('flags, label', [
    ('fpu sse2 avx avx2 fma', 'AVX2'),
    ('avx2 avx_vnni', 'AVX2 VNNI'),
    ('avx2 avx512f avx512bw avx512_vnni', 'AVX-512 VNNI'),
    ('avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16',
     'AVX-512 VNNI BF16 AMX'),
    ('fpu sse2', 'no AVX2'),
])
def test_label_from_cpuinfo(tmp_path, monkeypatch, flags, label):
    for k in ISA_CAPS:
        monkeypatch.delenv(k, raising=False)
    info = tmp_path / 'cpuinfo'
    info.write_text(f'processor\t: 0\nflags\t\t: {flags}\n\n'
                    f'processor\t: 1\nflags\t\t: {flags}\n')
    assert cpu_vector_isa(str(info)) == label


def test_unreadable_and_capped(tmp_path, monkeypatch):
    for k in ISA_CAPS:
        monkeypatch.delenv(k, raising=False)
    assert cpu_vector_isa(str(tmp_path / 'none')) == 'unknown'
    info = tmp_path / 'cpuinfo'
    info.write_text('flags\t: avx2 avx512f avx512_vnni\n')
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    assert cpu_vector_isa(str(info)) == \
        'AVX-512 VNNI (PyTorch capped: ONEDNN_MAX_CPU_ISA=AVX2)'
    assert cpu_vector_isa(str(info), with_caps=False) == 'AVX-512 VNNI'
