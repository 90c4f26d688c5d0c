"""tools/infer.py --ray on a local Ray cluster (127.0.0.1, 2 CPUs): the
outputs are byte-identical to the single-process run with the same threads
per request (a job with a video too, its frames cut into ranges that two
actors read from the video's start), a rerun resumes, a worker killed with
SIGKILL in the middle of a job leaves no half-written file and every image
done exactly once, an image an actor never finishes ends the run with one
error naming it, and Ray says nothing of deprecation (its deprecation
warnings are errors here). Ray is in the test extras: where it is missing
this fails, it does not skip."""
import os
import os.path as osp
import shutil
import signal
import threading
import time

import cv2
import numpy as np
import pytest

import ray
from repseg.infer import InferSettings, Segmenter
from repseg.infer.distributed import RayExecutor
from repseg.infer.driver import Job, drive, plan, unit_sizes
from tests.infer import stuck
from tests.utils import ROOT, random_onnx, tool_module

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        'error::ray.util.annotations.RayDeprecationWarning')
]
N = 120
FRAMES = 24


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


def _files(folder):
    return sorted(osp.relpath(osp.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


def _same_outputs(a, b):
    names = _files(osp.join(a, 'labels'))
    assert names == _files(osp.join(b, 'labels'))
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


@pytest.fixture(scope='module')
def video_job(synthetic_root, job, tmp_path_factory):
    """A video of FRAMES frames and a folder of 4 images, segmented by one
    process (overlays, areas) into ``single``."""
    onnx, folder, _ = job
    tmp = tmp_path_factory.mktemp('ray_video')
    img = cv2.imread(str(folder / '0000.png'))
    video = str(tmp / 'drive.mp4')
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 10,
                        (img.shape[1], img.shape[0]))
    for i in range(FRAMES):
        w.write(np.roll(img, 8 * i, axis=1))
    w.release()
    few = tmp / 'few'
    few.mkdir()
    for i in range(4):
        shutil.copy(folder / f'{i:04d}.png', few / f'{i}.png')
    inputs = [str(few), video]
    single = tmp / 'single'
    seg = Segmenter(onnx, settings=InferSettings(
        threads=1, quiet=True, overlay=True, areas=True))
    assert {r.status for r in seg(inputs, str(single))} == {'done'}
    return onnx, inputs, single


def test_a_video_on_ray_is_byte_identical_to_one_process(
        cluster, video_job, tmp_path, capfd):
    onnx, inputs, single = video_job
    # the two actors each read a range of the video's frames
    assert unit_sizes(FRAMES + 4, 2, remote=True)[1] < FRAMES
    out = tmp_path / 'ray'
    capfd.readouterr()
    try:
        tool_module(osp.join(ROOT, 'tools', 'infer.py')).main([
            *inputs, '--model', onnx, '--out', str(out), '--ray',
            '--threads', '1', '--overlay', '--areas', '--quiet'])
    except SystemExit as e:
        assert not e.code, e.code
    printed, err = capfd.readouterr()
    assert f'{FRAMES + 4} done, 0 skipped' in printed, printed
    assert "after Ray's start-up" in printed, printed
    assert 'deprecat' not in err.lower(), err
    names = _same_outputs(single, out)
    assert len(names) == FRAMES + 4
    for f in ('areas.csv', ):    # rows in the inputs' order
        assert (out / f).read_bytes() == (single / f).read_bytes()
    assert sorted((out / 'done.txt').read_text().split()) == sorted(
        (single / 'done.txt').read_text().split())
    # the driver, which counts the video's last frame, writes its video
    made = [f for f in _files(out / 'overlays') if f.endswith('.mp4')]
    assert made == [f for f in _files(single / 'overlays')
                    if f.endswith('.mp4')] and len(made) == 1
    cap = cv2.VideoCapture(str(out / 'overlays' / made[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    cap.release()


def test_an_image_an_actor_never_finishes_ends_the_run(cluster, tmp_path):
    folder = stuck.folder(tmp_path / 'photos')
    settings = InferSettings(stall_timeout=1.0, quiet=True, threads=1)
    sources, total = plan([folder], settings)
    out = str(tmp_path / 'out')
    error, _ = stuck.stall(lambda: list(drive(
        Job(sources, total, out, settings, stuck.network()),
        RayExecutor(stuck.torch_free_network, settings, out,
                    deployed=True))), deadline=120)
    stuck.names_the_image(str(error))
    stuck.finished_stays_finished(out)
