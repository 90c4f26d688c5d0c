"""repseg-serve's command line: tools/serve.py and the console script's
``main`` say what is wrong in one ``error:`` line before serving."""
import os.path as osp
import re
import subprocess
import sys

import pytest

from repseg.serve.cli import main
from tests.utils import ROOT, one_error_line


def test_the_tool_refuses_a_missing_model_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'serve.py'),
         str(tmp_path / 'no.onnx')], capture_output=True, text=True,
        cwd=ROOT, timeout=120)
    assert 'does not exist' in one_error_line(proc)


@pytest.mark.parametrize('flags, words', [
    (['--queue', '-1'], '--queue -1: give 0'),
    (['--timeout', '0'], '--timeout 0.0: give a number of seconds'),
    (['--port', '70000'], '--port 70000: give a TCP port'),
])
def test_the_console_script_refuses_bad_settings(tmp_path, flags, words):
    model = tmp_path / 'm.onnx'
    model.write_bytes(b'')
    with pytest.raises(SystemExit) as e:
        main([str(model), *flags])
    assert str(e.value).startswith('error: ') and words in str(e.value)


def test_setup_declares_the_command_and_the_extra():
    text = open(osp.join(ROOT, 'setup.py')).read()
    assert "'repseg-serve = repseg.serve.cli:main'" in text
    extra = re.search(r"'serve': \[(.*?)\]", text).group(1)
    for pkg in ('fastapi', 'uvicorn', 'python-multipart', 'httpx'):
        assert f"'{pkg}'" in extra
