"""tools/infer.py --ray on a local Ray cluster (127.0.0.1, 2 CPUs): the
outputs are byte-identical to the single-process run with the same threads
per request, a rerun resumes, and a worker killed with SIGKILL in the middle
of a job leaves no half-written file and every image done exactly once.
Ray is in the test extras: where it is missing this fails, it does not
skip."""
import os
import os.path as osp
import shutil
import signal
import threading
import time

import cv2
import pytest

import ray
from repseg.infer import InferSettings, Segmenter
from tests.utils import random_onnx

pytestmark = pytest.mark.slow
N = 200


@pytest.fixture(scope='module')
def cluster():
    ray.init(num_cpus=2, _node_ip_address='127.0.0.1',
             include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope='module')
def job(synthetic_root, tmp_path_factory):
    """An ONNX file of the demo model and a folder of N images."""
    tmp = tmp_path_factory.mktemp('ray')
    _, _, onnx = random_onnx(synthetic_root, tmp)
    src = sorted(osp.join(d, f) for d, _, fs in os.walk(
        osp.join(synthetic_root, 'leftImg8bit')) for f in fs)
    folder = tmp / 'images'
    folder.mkdir()
    for i in range(N):
        shutil.copy(src[i % len(src)], folder / f'{i:04d}.png')
    single = tmp / 'single'
    seg = Segmenter(onnx, settings=InferSettings(
        threads=1, quiet=True, areas=True))
    results = list(seg([str(folder)], str(single)))
    assert all(r.status == 'done' for r in results)
    return onnx, folder, single


def _same_outputs(a, b):
    names = sorted(os.listdir(osp.join(a, 'labels')))
    assert names == sorted(os.listdir(osp.join(b, 'labels')))
    for n in names:
        with open(osp.join(a, 'labels', n), 'rb') as fa, \
                open(osp.join(b, 'labels', n), 'rb') as fb:
            assert fa.read() == fb.read(), n
    return names


def test_ray_run_equals_one_process_and_resumes(cluster, job, tmp_path):
    onnx, folder, single = job
    out = tmp_path / 'ray'
    seg = Segmenter(onnx, settings=InferSettings(
        threads=1, quiet=True, ray=True, areas=True))
    results = list(seg([str(folder)], str(out)))
    assert sorted(r.key for r in results) == [f'{i:04d}' for i in range(N)]
    assert all(r.status == 'done' for r in results)
    assert seg.summary.done == N and seg.summary.failed == 0
    assert len(_same_outputs(single, out)) == N
    # the driver wrote the manifest and the areas, one row per image
    done = (out / 'done.txt').read_text().split()
    assert sorted(done) == sorted(r.key for r in results)
    rows = (out / 'areas.csv').read_text().splitlines()
    assert rows[0].startswith('image,road') and len(rows) == N + 1
    assert sorted(rows[1:]) == sorted(
        (single / 'areas.csv').read_text().splitlines()[1:])
    # a rerun skips everything (the same manifest), without a cluster job
    again = Segmenter(onnx, settings=InferSettings(
        threads=1, quiet=True, ray=True, areas=True))
    assert {r.status for r in again([str(folder)], str(out))} == {'skipped'}


def _worker_pids():
    import psutil
    return [p.pid for p in psutil.process_iter(['cmdline'])
            if any('_Worker' in c or 'MapWorker' in c
                   for c in (p.info['cmdline'] or []))]


def test_a_killed_worker_leaves_no_half_file_and_redoes_nothing_twice(
        cluster, job, tmp_path):
    onnx, folder, single = job
    out = tmp_path / 'ray_killed'
    seg = Segmenter(onnx, settings=InferSettings(threads=1, quiet=True,
                                                 ray=True))
    results, killed = [], []

    def kill_one():
        # once some images are written, SIGKILL one of the two actors
        deadline = time.time() + 300
        while time.time() < deadline:
            labels = out / 'labels'
            written = len(os.listdir(labels)) if labels.is_dir() else 0
            if written >= 10:
                pids = _worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(written)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one)
    killer.start()
    for r in seg([str(folder)], str(out)):
        results.append(r)
    killer.join()
    assert killed and killed[0] < N, 'no worker was killed mid-job'
    keys = [r.key for r in results]
    assert sorted(keys) == [f'{i:04d}' for i in range(N)]   # once each
    assert all(r.status == 'done' for r in results)
    done = (out / 'done.txt').read_text().split()
    assert sorted(done) == sorted(keys)                        # once each
    # no temporary left, every label map whole and as one process writes it
    left = [f for _, _, fs in os.walk(out) for f in fs if '.tmp-' in f]
    assert left == []
    _same_outputs(single, out)
    for n in os.listdir(out / 'labels'):
        assert cv2.imread(str(out / 'labels' / n)) is not None
