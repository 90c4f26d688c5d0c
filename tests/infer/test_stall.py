"""A run never waits forever: an image the network never finishes ends the
run with one error naming it and the runtime (what was finished stays
finished), and a tool exits at once after that line even though a thread
is still stuck."""
import os.path as osp
import subprocess
import sys
import threading
import time

from repseg.infer.driver import Watch
from repseg.infer.engine import InferSettings, Summary, plan, run
from tests.infer import stuck
from tests.utils import ROOT


def test_an_image_that_never_finishes_ends_the_run_with_its_name(tmp_path):
    release = threading.Event()
    net = stuck.network(release=release)
    folder = stuck.folder(tmp_path / 'photos')
    settings = InferSettings(stall_timeout=1.0, quiet=True)
    sources, total = plan([folder], settings)
    out = str(tmp_path / 'out')
    try:
        error, took = stuck.stall(lambda: list(run(
            net, sources, total, out, settings, Summary())), deadline=30)
    finally:
        release.set()
    stuck.names_the_image(str(error))
    assert 1.0 <= took < 10, took
    stuck.finished_stays_finished(out)


def test_the_limit_grows_with_the_slowest_image():
    watch = Watch(timeout=0.5)
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
