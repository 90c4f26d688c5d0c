"""Issue 37, item 4: the deployment install. A fresh virtual environment
gets ``pip install ".[openvino,serve]"`` of this checkout (built from a
copy of its source, so the checkout stays clean): pip ends without an
``ERROR`` line, torch and OpenMMLab are not there, ``repseg-infer`` writes
the label maps this environment's tools/infer.py writes from an INT8
OpenVINO IR of the demo model, ``repseg-serve`` answers a request with the
same bytes, and a config given to either command is one line naming the
extra to install. pip and the package index must be reachable: this test
fails, never skips, without them."""
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest

from repseg.apis import load_cfg
from repseg.deploy.onnx import ExportSettings, export_model
from repseg.deploy.runtimes import get_runtime
from tests.serve.helpers import free_port
from tests.utils import (DEMO_CONFIG, ROOT, one_error_line, random_model,
                         tool_module)

pytestmark = pytest.mark.slow

#: what a source distribution of repseg holds (those that exist)
SOURCE = ('setup.py', 'setup.cfg', 'pyproject.toml', 'MANIFEST.in',
          'README.md', 'LICENSE', 'repseg')
#: one watchdog for the venv and pip (a warm cache takes under a minute)
INSTALL_TIMEOUT = 600
#: the flags of every run (one thread, one request: the same bytes)
RUN = ['--threads', '1', '--mode', 'latency', '--quiet']


def venv_env(venv):
    """The environment of a command in ``venv``: its bin/ first, and no
    PYTHONPATH (tests.utils points it at this checkout)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    env['PATH'] = osp.join(venv, 'bin') + os.pathsep + env.get('PATH', '')
    return env


def start_install(tmp):
    """Copy the source, make the venv and start pip in it (in the
    background): (the pip process, its log file, the venv)."""
    src, venv = tmp / 'src', str(tmp / 'venv')
    src.mkdir()
    for name in SOURCE:
        path = osp.join(ROOT, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        elif osp.isfile(path):
            shutil.copy(path, src / name)
    log = open(tmp / 'pip.log', 'w+')
    script = (f'"{sys.executable}" -m venv "{venv}" && '
              f'"{venv}/bin/python" -m pip install ".[openvino,serve]"')
    proc = subprocess.Popen(['bash', '-c', script], cwd=src, stdout=log,
                            stderr=subprocess.STDOUT, text=True,
                            env=venv_env(venv))
    return proc, log, venv


def int8_ir(tmp):
    """(config, checkpoint, INT8 OpenVINO IR) of the tiny demo model: an
    IR of the fused model (whose record carries the recipe), quantized by
    NNCF on two random inputs."""
    path, ckpt, _ = random_model(str(tmp / 'no_data'), tmp, 'demo')
    fp32, int8 = str(tmp / 'm_fp32.xml'), str(tmp / 'm_int8.xml')
    runtime = get_runtime('openvino')
    export_model(load_cfg(path), ckpt, fp32, ExportSettings(
        backend=runtime.name, verify=False, input_size=(64, 128)))
    rng = np.random.default_rng(0)
    runtime.quantize(fp32, int8, [
        rng.standard_normal((1, 3, 64, 128), dtype=np.float32)
        for _ in range(2)])
    assert runtime.read_info(int8).precision == 'int8'
    return path, ckpt, int8


def images(folder):
    """Two photos-like PNGs (one of another size than the IR's)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, (h, w) in (('a', (64, 128)), ('b', (90, 120))):
        ramp = np.linspace(0, 255, h * w * 3).reshape(h, w, 3)
        noise = rng.integers(0, 40, (h, w, 3))
        cv2.imwrite(str(folder / f'{name}.png'),
                    np.clip(ramp + noise, 0, 255).astype(np.uint8))
    return folder


@pytest.fixture(scope='module')
def deploy(tmp_path_factory):
    """The deployment install (pip runs while the IR is made) and what the
    main environment's tools/infer.py writes: a dict of ``venv``,
    ``pip`` (its output), ``config``, ``ckpt``, ``ir``, ``images``,
    ``labels`` (the main install's label PNGs)."""
    tmp = tmp_path_factory.mktemp('deploy_install')
    proc, log, venv = start_install(tmp)
    try:
        config, ckpt, ir = int8_ir(tmp)
        folder = images(tmp / 'images')
        out = tmp / 'main_out'
        tool_module(osp.join(ROOT, 'tools', 'infer.py')).main(
            [str(folder), '--model', ir, '--out', str(out), *RUN])
        labels = {p: (out / 'labels' / p).read_bytes()
                  for p in ('a.png', 'b.png')}
        proc.wait(timeout=INSTALL_TIMEOUT)
    finally:
        if proc.poll() is None:   # the watchdog fired, or the IR failed
            proc.kill()
            proc.wait()
    log.seek(0)
    pip = log.read()
    log.close()
    assert proc.returncode == 0, f'the install failed:\n{pip[-4000:]}'
    return dict(venv=venv, pip=pip, config=config, ckpt=ckpt, ir=ir,
                images=folder, labels=labels)


def command(deploy, name):
    """The venv's own ``name`` (never one of this environment's)."""
    return osp.join(deploy['venv'], 'bin', name)


def run_in(deploy, name, *argv, timeout=300):
    return subprocess.run([command(deploy, name), *argv],
                          capture_output=True, text=True,
                          env=venv_env(deploy['venv']), cwd=deploy['venv'],
                          timeout=timeout)


def test_pip_says_no_error_and_installs_no_training_stack(deploy):
    errors = [line for line in deploy['pip'].splitlines()
              if line.startswith('ERROR')]
    assert not errors, '\n'.join(errors)
    proc = run_in(deploy, 'python', '-c', (
        'import importlib.util as u\n'
        'for m in ("torch", "torchvision", "mmengine", "mmcv", "mmseg"):\n'
        '    assert u.find_spec(m) is None, m\n'
        'import repseg, repseg.infer, repseg.serve\n'
        'print(repseg.__file__)'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the installed copy, not this checkout
    assert osp.join(deploy['venv'], 'lib') in proc.stdout, proc.stdout


def test_repseg_infer_writes_the_main_installs_labels(deploy, tmp_path):
    out = tmp_path / 'venv_out'
    proc = run_in(deploy, 'repseg-infer', str(deploy['images']), '--model',
                  deploy['ir'], '--out', str(out), *RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '2 done' in proc.stdout, proc.stdout + proc.stderr[-3000:]
    for name, want in deploy['labels'].items():
        assert (out / 'labels' / name).read_bytes() == want, name


def test_repseg_serve_answers_with_the_same_label_map(deploy, tmp_path):
    help_ = run_in(deploy, 'repseg-serve', '--help')
    assert help_.returncode == 0 and 'usage: repseg-serve' in help_.stdout
    port = free_port()
    log = tmp_path / 'serve.log'
    with open(log, 'w') as f:
        server = subprocess.Popen(
            [command(deploy, 'repseg-serve'), deploy['ir'], '--port',
             str(port), '--threads', '1', '--mode', 'latency'], stdout=f,
            stderr=subprocess.STDOUT, env=venv_env(deploy['venv']))
    base = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + '/ready', timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, 'not ready in 120 s'
            time.sleep(0.2)
        body = (deploy['images'] / 'b.png').read_bytes()
        request = urllib.request.Request(
            base + '/segment', data=body,
            headers={'Content-Type': 'image/png'})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.status == 200
            assert r.read() == deploy['labels']['b.png']
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize('command', ['repseg-infer', 'repseg-serve'])
def test_a_config_is_one_line_naming_the_extra(deploy, tmp_path, command):
    model = [deploy['config'], '--checkpoint', deploy['ckpt']]
    argv = ([str(deploy['images']), '--model', *model, '--out',
             str(tmp_path / 'o')] if command == 'repseg-infer' else model)
    line = one_error_line(run_in(deploy, command, *argv, timeout=120))
    assert "(a model run in PyTorch) needs the training stack (torch is " \
        'not installed here): pip install "repseg[train]" (mmcv with its ' \
        'compiled ops is built by scripts/install.sh' in line, line


TAIL = ('needs the training stack (torch is not installed here): pip '
        'install "repseg[train]" (mmcv with its compiled ops is built by '
        'scripts/install.sh, the training route), or ')


@pytest.mark.parametrize('tool, config', [
    ('infer.py', 'model'), ('serve.py', 'model'), ('infer.py', 'config')])
def test_the_tools_say_it_too_where_torch_cannot_be_imported(tmp_path, tool,
                                                             config):
    """tools/infer.py and tools/serve.py (the same code) where importing
    torch, mmcv, mmengine or mmseg fails: a config as the model, or a
    deployed file's --config (read with mmengine), is one line."""
    weights = tmp_path / ('a.pth' if config == 'model' else 'm.onnx')
    weights.write_bytes(b'')
    model = ([DEMO_CONFIG, '--checkpoint', str(weights)] if config == 'model'
             else [str(weights), '--config', DEMO_CONFIG])
    argv = (['a.png', '--model', *model, '--out', str(tmp_path / 'o')]
            if tool == 'infer.py' else model)
    line = one_error_line(subprocess.run(
        [sys.executable, osp.join(ROOT, 'tests', 'infer',
                                  'without_training_stack.py'),
         osp.join(ROOT, 'tools', tool), *argv], capture_output=True,
        text=True, cwd=ROOT, timeout=120))
    assert line == ('error: ' + (
        f'the config {DEMO_CONFIG!r} (a model run in PyTorch) ' + TAIL
        + 'give a deployed file exported from it (.onnx, .xml)'
        if config == 'model' else f'reading the config {DEMO_CONFIG!r} '
        + TAIL + 'export the file again (files record their recipe now) '
        'and drop --config'))
