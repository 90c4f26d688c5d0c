"""tools/dev/infer_stress.py: the folder every run segments, and the
watchdog that tells a run that ended from one that hangs (and keeps what
it printed)."""
import os
import os.path as osp

import cv2

from tests.utils import DEV_TOOLS  # noqa: F401  (puts tools/dev on sys.path)
import infer_stress  # noqa: E402


def test_the_folder_holds_every_kind_of_input(tmp_path):
    root = infer_stress.make_folder(str(tmp_path / 'photos'), frames=5)
    names = sorted(os.listdir(root))
    assert {'corrupt.png', 'empty.png', 'drive.avi', 'nested'} <= set(names)
    assert os.path.getsize(osp.join(root, 'empty.png')) == 0
    assert cv2.imread(osp.join(root, 'corrupt.png')) is None
    sizes = {cv2.imread(osp.join(root, n)).shape[:2] for n in names
             if n.startswith('img')}
    assert len(sizes) == 4   # several sizes
    cap = cv2.VideoCapture(osp.join(root, 'drive.avi'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def _fake_tool(tmp_path, body):
    tools = tmp_path / 'tools'
    tools.mkdir()
    (tools / 'infer.py').write_text(body)
    return str(tools)


def test_a_run_that_never_ends_is_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(infer_stress, 'TOOLS', _fake_tool(
        tmp_path, 'import time\nprint("started", flush=True)\n'
        'time.sleep(120)\n'))
    hang = str(tmp_path / 'hang.txt')
    res = infer_stress.one_run('m.xml', 'throughput', False, str(tmp_path),
                               str(tmp_path / 'out'), 2, hang)
    assert res['status'] == 'hang' and 2 <= res['seconds'] < 60
    with open(hang) as f:
        assert 'started' in f.read()   # the run's output is kept


def test_a_run_that_ends_with_its_summary_is_ok(tmp_path, monkeypatch):
    monkeypatch.setattr(infer_stress, 'TOOLS', _fake_tool(
        tmp_path, 'import sys\nprint("3 done, 0 skipped (done before), '
        '2 failed in 1.0 s")\nsys.exit(1)\n'))
    for tty in (False, True):
        res = infer_stress.one_run('m.xml', 'latency', tty, str(tmp_path),
                                   str(tmp_path / 'out'), 30,
                                   str(tmp_path / 'h.txt'))
        assert res['status'] == 'ok', res
    (tmp_path / 'other').mkdir()
    monkeypatch.setattr(infer_stress, 'TOOLS', _fake_tool(
        tmp_path / 'other', 'import sys\nsys.exit(2)\n'))
    res = infer_stress.one_run('m.xml', 'latency', False, str(tmp_path),
                               str(tmp_path / 'out'), 30,
                               str(tmp_path / 'h.txt'))
    assert res['status'] == 'failed (2)'
