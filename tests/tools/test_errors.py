"""Every tool turns any repseg error into one `error:` line and a non-zero
exit code; every repseg exception is a RepsegError."""
import os.path as osp
import subprocess
import sys

import pytest

from repseg import errors
from repseg.datasets import DatasetError
from repseg.engine import CheckpointError
from repseg.ops._nnpack import NNPACKError
from tests.utils import DEMO_CONFIG, ROOT

pytestmark = pytest.mark.slow


def test_one_exception_family():
    for cls in (errors.UsageError, errors.CheckpointError,
                errors.DatasetError, errors.NotFusedError,
                errors.BackendError, DatasetError, CheckpointError,
                NNPACKError):
        assert issubclass(cls, errors.RepsegError), cls


def _cases(tmp):
    junk = tmp / 'junk'
    junk.mkdir()
    (junk / 'x.txt').write_text('not a dataset')
    none = str(tmp / 'none')
    return {
        'train.py': ([none + '.py'], 'does not exist'),
        'test.py': ([DEMO_CONFIG, none + '.pth'], 'does not exist'),
        'convert.py': ([DEMO_CONFIG, none + '.pth', str(tmp / 'o.pth')],
                       'does not exist'),
        'export.py': ([DEMO_CONFIG, none + '.pth', str(tmp / 'o.xml')],
                      'does not exist'),
        'benchmark.py': ([DEMO_CONFIG, '--shape', '8'], 'not supported'),
        'quantize.py': ([DEMO_CONFIG, none + '.pth', str(tmp / 'q')],
                        'does not exist'),
        'check_dataset.py': ([none], 'does not exist'),
        'convert_cityscapes.py': ([none], 'does not exist'),
        'demo.py': (['--data-root', str(junk), '--work-dir',
                     str(tmp / 'w')], 'is missing'),
        'dev/cpu_isa.py': (['--as', 'avx2', '--', none],
                           'no such program'),
    }


@pytest.mark.parametrize('tool', [
    'train.py', 'test.py', 'convert.py', 'export.py',
    'benchmark.py', 'quantize.py', 'check_dataset.py',
    'convert_cityscapes.py', 'demo.py', 'dev/cpu_isa.py'
])
def test_tool_error_is_one_line(tool, tmp_path):
    args, message = _cases(tmp_path)[tool]
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', tool), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr


def _last_error(tool, *args):
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', tool), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


def test_tools_spell_settings_as_their_own_flags(tmp_path):
    """The library names settings (``int8=True``); each tool shows its own
    flags instead."""
    last = _last_error('benchmark.py', DEMO_CONFIG, '--shape', '64',
                       '--int8')
    assert last == ('error: --int8 times the INT8 model of a runtime next '
                    'to fp32; it needs --backend openvino or --backend '
                    'onnxruntime'), last
    last = _last_error('quantize.py', DEMO_CONFIG, 'x.pth',
                       str(tmp_path / 'q'), '--max-drop', '0.2')
    assert last == ('error: --max-drop 0.2 is accuracy control, which '
                    'OpenVINO (NNCF) has and ONNX Runtime has not: add '
                    '--backend openvino'), last
    last = _last_error('quantize.py', DEMO_CONFIG, 'x.pth',
                       str(tmp_path / 'q'), '--backend', 'onnxruntime',
                       'openvino', '--calib-method', 'entropy')
    assert last == ('error: --calib-method entropy: OpenVINO calibrates '
                    'with minmax or mean_minmax; choose one of them (or '
                    'leave OpenVINO out of --backend)'), last
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'')
    last = _last_error('test.py', DEMO_CONFIG, str(onnx), '--show-dir',
                       str(tmp_path / 's'))
    assert 'drop --out / --show-dir / --show / --tta' in last, last


def test_malformed_overrides_and_configs_are_one_line(tmp_path):
    last = _last_error('train.py', DEMO_CONFIG, '--cfg-options',
                       'model.backbone.arch')
    assert last.endswith("error: argument --cfg-options: "
                         "'model.backbone.arch' is not KEY=VALUE (e.g. "
                         'model.backbone.arch=B2 or '
                         'train_cfg.max_iters=100)'), last
    bad = tmp_path / 'bad.py'
    bad.write_text('x = 1\nmodel = dict(\n')
    last = _last_error('train.py', str(bad))
    assert last == (f'error: the config {bad} has a Python syntax error in '
                    "line 2: '(' was never closed. Fix that line."), last
    last = _last_error('train.py', DEMO_CONFIG, '--cfg-options',
                       'train_cfg.max_iter=4')
    assert last.startswith("error: the override 'train_cfg.max_iter' names "
                           "no setting of the config: did you mean "
                           "'train_cfg.max_iters'?"), last


@pytest.mark.parametrize('tool, name', [('convert.py', 'out.pth'),
                                        ('export.py', 'out.onnx')])
def test_an_output_that_is_a_folder_is_one_line(tool, name, tmp_path):
    """A folder given as the output file: one line saying so, also with
    --force (which must not then crash writing into it)."""
    folder = tmp_path / name
    folder.mkdir()
    for extra in ([], ['--force']):
        last = _last_error(tool, DEMO_CONFIG, str(tmp_path / 'none.pth'),
                           str(folder), *extra)
        assert last == (f'error: the output {str(folder)!r} is a folder; '
                        'give a file name ending in ' + (
                            '.pth (the deploy config is written next to it)'
                            if tool == 'convert.py' else '.onnx')), last
