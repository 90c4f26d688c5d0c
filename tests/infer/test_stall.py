"""A run never waits forever: an image the network never finishes ends the
run with one error naming it and the runtime (what was finished stays
finished), and a tool exits at once after that line even though a thread
is still stuck."""
import os.path as osp
import subprocess
import sys
import threading
import time

import cv2
import numpy as np

from repseg.deploy.runtimes import RunInfo
from repseg.errors import StalledError
from repseg.infer.engine import (InferSettings, Network, Summary, _Watch,
                                 plan, run)
from repseg.infer.outputs import DONE
from repseg.infer.recipe import Recipe
from tests.utils import ROOT


def _folder(tmp_path):
    d = tmp_path / 'photos'
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ('a', 'b', 'c'):
        cv2.imwrite(str(d / f'{name}.png'),
                    rng.integers(0, 255, (16, 24, 3), np.uint8))
    return str(d)


def test_an_image_that_never_finishes_ends_the_run_with_its_name(tmp_path):
    release = threading.Event()

    def network(x):
        if x[0, 0, 0, 0] == STUCK:   # the second image's first pixel
            release.wait()
        return np.zeros((1, 2) + x.shape[-2:], np.float32)

    folder = _folder(tmp_path)
    STUCK = float(cv2.imread(osp.join(folder, 'b.png'))[0, 0, 0])
    net = Network(run=network, recipe=Recipe(classes=['x', 'y'],
                                             palette=[[0, 0, 0],
                                                      [255, 255, 255]]),
                  info=RunInfo(runtime='onnxruntime', file='m_int8.onnx',
                               precision='int8', mode='throughput',
                               requests=2),
                  identity=dict(file='m_int8.onnx'))
    settings = InferSettings(stall_timeout=1.0, quiet=True)
    sources, total = plan([folder], settings)
    out = str(tmp_path / 'out')
    caught = []

    def whole_run():   # on a thread: a run that never ends fails the test
        try:
            list(run(net, sources, total, out, settings, Summary()))
        except Exception as e:  # noqa: B902
            caught.append(e)

    start = time.perf_counter()
    runner = threading.Thread(target=whole_run, daemon=True)
    runner.start()
    runner.join(30)
    took = time.perf_counter() - start
    release.set()
    assert not runner.is_alive(), 'the run waited for the stuck image'
    assert len(caught) == 1 and isinstance(caught[0], StalledError), caught
    message = str(caught[0])
    assert 'b.png' in message and 'ONNX Runtime' in message, message
    assert 'int8' in message and 'm_int8.onnx' in message, message
    assert 'stall_timeout=' in message, message   # the setting to raise
    assert 1.0 <= took < 10, took
    with open(osp.join(out, DONE)) as f:
        done = f.read().split()
    assert 'a' in done and 'b' not in done   # finished stays finished
    assert osp.isfile(osp.join(out, 'labels', 'a.png'))


def test_the_limit_grows_with_the_slowest_image():
    watch = _Watch(timeout=0.5)
    assert watch.limit() == 0.5
    watch.call(lambda item: time.sleep(0.05), object())
    assert 20 * 0.05 <= watch.limit() < 20 * 0.5
    assert watch.stalled() is None


SCRIPT = '''
import sys, threading
sys.path.insert(0, {tools!r})
from _cli import make_parser, run
from repseg.errors import StalledError

def main(args):
    threading.Thread(target=threading.Event().wait).start()   # stuck
    raise StalledError('x.png did not finish in 121 s (OpenVINO)')

run(make_parser('t'), main, [])
'''


def test_a_tool_exits_at_once_with_a_stuck_thread(tmp_path):
    script = tmp_path / 'tool.py'
    script.write_text(SCRIPT.format(tools=osp.join(ROOT, 'tools')))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        'error: x.png did not finish in 121 s (OpenVINO)']
