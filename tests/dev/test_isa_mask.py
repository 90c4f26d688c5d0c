"""Running a process as if the CPU had a smaller vector ISA
(tools/dev/isa_mask.py, tools/dev/cpu_isa.py): the cpuid bits, the label every
speed figure carries, and - on a CPU that has AVX-512 VNNI and CPUID
faulting - that ONNX Runtime and PyTorch really pick the smaller CPU's
kernels (observed through U8S8 int16 saturation, which only kernels
without VNNI have)."""
import subprocess
import sys

import pytest

from repseg.errors import BackendError, UsageError
from repseg.ops import cpu
from tests.utils import DEV_TOOLS  # noqa: F401  (puts tools/dev on sys.path)
import isa_mask  # noqa: E402
from isa_mask import (ENV_MASK, LEVELS, flags_of_spec, hidden_by,
                                 mask_spec, masked_env)

from tests.utils import CAN_MASK_ISA, run_as_isa

needs_masking = pytest.mark.skipif(
    not CAN_MASK_ISA,
    reason='needs an x86-64 CPU with AVX-512 VNNI and CPUID faulting')


def test_mask_bits_follow_cpuid_leaf_7():
    # Intel SDM: leaf 7.0 EBX bit 16 AVX512F, bit 30 AVX512BW; ECX bit 11
    # AVX512_VNNI; leaf 7.1 EAX bit 4 AVX-VNNI, bit 5 AVX512_BF16
    assert mask_spec(['avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni',
                      'avx512_bf16']) == \
        '7.0.ebx=0x40010000,7.0.ecx=0x800,7.1.eax=0x30'
    for level in LEVELS:
        assert flags_of_spec(mask_spec(hidden_by(level))) == hidden_by(level)


def test_levels_hide_less_and_less():
    hidden = [set(hidden_by(level)) for level in
              ('avx2', 'avx512', 'avx512_vnni', 'avx512_bf16')]
    assert all(a > b for a, b in zip(hidden, hidden[1:]))
    assert {'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8'} <= hidden[0]
    assert 'avx512f' not in hidden[1] and 'avx512_vnni' in hidden[1]
    assert 'avx512_vnni' not in hidden[2] and 'avx512_bf16' in hidden[2]
    assert 'avx512_bf16' not in hidden[3] and 'amx_bf16' in hidden[3]
    with pytest.raises(UsageError, match='avx2, avx512, avx512_vnni'):
        hidden_by('sse4')


def test_label_of_a_masked_process(tmp_path, monkeypatch):
    for k in cpu.ISA_CAPS:
        monkeypatch.delenv(k, raising=False)
    info = tmp_path / 'cpuinfo'
    info.write_text('flags\t: avx2 avx512f avx512_vnni avx512_bf16 '
                    'amx_tile amx_int8 amx_bf16\n')
    monkeypatch.setattr(cpu, 'hidden_flags', lambda: hidden_by('avx2'))
    assert cpu.cpu_vector_isa(str(info)) == \
        'AVX2 (masked; hardware: AVX-512 VNNI BF16 AMX)'
    monkeypatch.setattr(cpu, 'hidden_flags', lambda: hidden_by('avx512'))
    assert cpu.cpu_vector_isa(str(info)) == \
        'AVX-512 (masked; hardware: AVX-512 VNNI BF16 AMX)'
    # hiding what the CPU does not have changes nothing
    info.write_text('flags\t: avx2 fma\n')
    assert cpu.cpu_vector_isa(str(info)) == 'AVX2'


def test_a_mask_variable_without_the_library_is_not_believed(monkeypatch):
    """This process has not preloaded the library: a stray
    REPSEG_CPUID_MASK must not relabel its figures."""
    monkeypatch.setenv(ENV_MASK, mask_spec(hidden_by('avx2')))
    monkeypatch.setenv(cpu.HIDDEN_ENV, ','.join(hidden_by('avx2')))
    assert cpu.hidden_flags() == []


def test_masked_env(tmp_path, monkeypatch):
    monkeypatch.setattr(isa_mask, 'cpuid_faulting_available', lambda: True)
    lib = tmp_path / 'repseg-cpuid-mask-x.so'
    monkeypatch.setattr(isa_mask, 'mask_library', lambda cache_dir: str(lib))
    env = masked_env('avx512', {'LD_PRELOAD': '/a.so:/old/repseg-cpuid-'
                                'mask-y.so', 'PATH': '/bin'})
    # ours first, other preloads kept, an older mask library dropped
    assert env['LD_PRELOAD'] == f'{lib}:/a.so'
    assert env['PATH'] == '/bin'
    assert flags_of_spec(env[ENV_MASK]) == hidden_by('avx512')
    assert env[cpu.HIDDEN_ENV].split(',') == hidden_by('avx512')
    monkeypatch.setattr(isa_mask, 'cpuid_faulting_available', lambda: False)
    with pytest.raises(BackendError, match='no CPUID faulting'):
        masked_env('avx2', {})


def test_the_tool_says_what_is_wrong(monkeypatch, capsys):
    import cpu_isa
    monkeypatch.setattr(isa_mask, 'cpuid_faulting_available', lambda: False)
    with pytest.raises(SystemExit) as e:
        cpu_isa.main(['--as', 'avx2', '--', 'true'])
    assert str(e.value).startswith('error: this CPU or kernel has no CPUID '
                                   'faulting')
    with pytest.raises(SystemExit):
        cpu_isa.main(['--as', 'avx2'])
    assert '--as needs a command to run after --' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cpu_isa.main(['--', 'true'])
    assert 'a command needs --as LEVEL' in capsys.readouterr().err


# a U8S8 dot product of 64 pairs 255 * 127: 2072640 exactly with VNNI;
# without it ONNX Runtime adds pairs in saturating int16 (32767 per pair)
PROBE = r'''
import numpy as np, onnxruntime as ort, torch
from onnx import TensorProto, helper, numpy_helper
from repseg.ops.cpu import cpu_vector_isa
g = helper.make_graph(
    [helper.make_node('MatMulInteger', ['a', 'b'], ['y'])], 'g',
    [helper.make_tensor_value_info('a', TensorProto.UINT8, [1, 64])],
    [helper.make_tensor_value_info('y', TensorProto.INT32, None)],
    [numpy_helper.from_array(np.full((64, 8), 127, np.int8), 'b')])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])
s = ort.InferenceSession(m.SerializeToString(),
                         providers=['CPUExecutionProvider'])
y = s.run(None, {'a': np.full((1, 64), 255, np.uint8)})[0][0, 0]
print(int(y), torch.backends.cpu.get_cpu_capability(), cpu_vector_isa(),
      sep='|')
'''


def _run(*level, code=PROBE, extra=()):
    command = [sys.executable, *extra, '-c', code]
    if level:
        return run_as_isa(*level, *command)
    return subprocess.run(command, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@needs_masking
def test_onnxruntime_and_pytorch_pick_the_smaller_cpus_kernels():
    exact, saturated = 255 * 127 * 64, 32767 * 32
    out = {}
    for level in ((), ('avx2', ), ('avx512', ), ('avx512_vnni', )):
        proc = _run(*level)
        assert proc.returncode == 0, proc.stderr
        out[level] = proc.stdout.strip().split('|')
    assert out[()][:2] == [str(exact), 'AVX512']
    assert out[('avx2', )][:2] == [str(saturated), 'AVX2']
    assert out[('avx2', )][2].startswith('AVX2 (masked; hardware: AVX-512 '
                                         'VNNI')
    assert out[('avx512', )][:2] == [str(saturated), 'AVX512']
    assert out[('avx512_vnni', )][:2] == [str(exact), 'AVX512']
    # masked where the level hides something this CPU has (BF16, AMX)
    hides = set(hidden_by('avx512_vnni')) & (cpu.cpu_flags() or set())
    assert out[('avx512_vnni', )][2].startswith(
        'AVX-512 VNNI (masked' if hides else 'AVX-512 VNNI')


@pytest.mark.slow
@needs_masking
def test_other_segfaults_still_end_the_process():
    """Faults that are not a cpuid reach the program's own handler
    (Python's faulthandler) or kill the process as before."""
    crash = 'import ctypes; ctypes.string_at(0)'
    proc = _run('avx2', code=crash)
    assert proc.returncode == -11, (proc.returncode, proc.stderr)
    proc = _run('avx2', code='import torch; ' + crash,
                extra=('-X', 'faulthandler'))
    assert proc.returncode == -11
    assert 'Fatal Python error: Segmentation fault' in proc.stderr


@pytest.mark.slow
@needs_masking
def test_a_bad_mask_runs_nothing():
    env = masked_env('avx2')
    env[ENV_MASK] = '7.0.ebp=0x1'
    proc = subprocess.run([sys.executable, '-c', 'print("ran")'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and 'ran' not in proc.stdout
    assert 'names a register other than eax..edx' in proc.stderr


# the kernel OpenVINO's CPU plugin picks for a 3x3 convolution
OV_PROBE = r'''
import openvino as ov, openvino.opset13 as ops, numpy as np
x = ops.parameter([1, 16, 32, 32], np.float32)
w = ops.constant(np.ones((16, 16, 3, 3), np.float32))
y = ops.convolution(x, w, [1, 1], [1, 1], [1, 1], [1, 1])
m = ov.Core().compile_model(ov.Model([y], [x]), 'CPU',
                            {'INFERENCE_PRECISION_HINT': 'f32'})
print([op.get_rt_info()['primitiveType'].astype(str) for op in
       m.get_runtime_model().get_ordered_ops()
       if op.get_rt_info()['layerType'].astype(str) == 'Convolution'][0])
'''


@pytest.mark.slow
@needs_masking
def test_openvino_picks_the_smaller_cpus_kernels():
    full = _run(code=OV_PROBE)
    avx2 = _run('avx2', code=OV_PROBE)
    assert full.returncode == 0 and avx2.returncode == 0, avx2.stderr
    assert 'avx512' in full.stdout, full.stdout
    assert 'avx2' in avx2.stdout and 'avx512' not in avx2.stdout, \
        avx2.stdout
