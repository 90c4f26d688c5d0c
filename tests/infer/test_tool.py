"""tools/infer.py as a user runs it: a folder with a corrupt and an empty
file goes on and says so, a rerun resumes, other options are refused, a
video's frames and its overlay video, one ``error:`` line for each mistake,
and a run killed with SIGKILL leaves no half-written file."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from repseg.apis import load_cfg
from repseg.deploy.onnx import ExportSettings, export_model
from repseg.infer import InferSettings, Segmenter
from tests.utils import ROOT, one_error_line, random_onnx

pytestmark = pytest.mark.slow
TOOL = osp.join(ROOT, 'tools', 'infer.py')


def infer(*args, timeout=600):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope='module')
def model(synthetic_root, tmp_path_factory):
    """(config path, checkpoint, ONNX file) of the demo model."""
    return random_onnx(synthetic_root, tmp_path_factory.mktemp('infer_tool'))


@pytest.fixture
def folder(synthetic_root, tmp_path):
    """3 good images (one a JPEG of another size), a corrupt and an empty
    file."""
    src = sorted(osp.join(d, f) for d, _, fs in os.walk(
        osp.join(synthetic_root, 'leftImg8bit', 'val')) for f in fs)
    d = tmp_path / 'street'
    (d / 'sub').mkdir(parents=True)
    img = cv2.imread(src[0])
    cv2.imwrite(str(d / 'a.png'), img)
    cv2.imwrite(str(d / 'b.jpg'), cv2.resize(img, (900, 600)))
    cv2.imwrite(str(d / 'sub' / 'c.png'), cv2.imread(src[1]))
    (d / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    (d / 'empty.jpg').write_bytes(b'')
    return d


def test_a_folder_with_bad_files_goes_on(model, folder, tmp_path):
    _, _, onnx = model
    out = tmp_path / 'out'
    proc = infer(str(folder), '--recursive', '--model', onnx, '--out',
                 str(out), '--overlay', '--areas', '--quiet')
    assert proc.returncode == 1, proc.stderr[-3000:]   # some failed
    failed = [ln for ln in proc.stderr.splitlines()
              if ln.startswith('failed: ')]
    assert len(failed) == 2, proc.stderr
    assert any('corrupt.png: OSError: not an image' in ln for ln in failed)
    assert any('empty.jpg: OSError: empty file' in ln for ln in failed)
    assert '3 done, 0 skipped (done before), 2 failed' in proc.stdout
    # names kept, relative to the folder
    for key in ('a', 'b', 'sub/c'):
        labels = cv2.imread(str(out / 'labels' / f'{key}.png'),
                            cv2.IMREAD_UNCHANGED)
        assert labels is not None and labels.dtype == np.uint8
        assert labels.max() < 19
        assert (out / 'overlays' / f'{key}.png').is_file()
    assert cv2.imread(str(out / 'labels' / 'b.png')).shape[:2] == (600, 900)
    failures = (out / 'failures.txt').read_text().splitlines()
    assert len(failures) == 2
    rows = (out / 'areas.csv').read_text().splitlines()
    assert rows[0].startswith('image,road,sidewalk') and len(rows) == 4
    shares = [float(v) for v in rows[1].split(',')[1:]]
    assert abs(sum(shares) - 1) < 1e-4
    # the rerun resumes: nothing redone but the failures
    again = infer(str(folder), '--recursive', '--model', onnx, '--out',
                  str(out), '--overlay', '--areas', '--quiet')
    assert '0 done, 3 skipped (done before), 2 failed' in again.stdout
    # other options into the same folder: one line; --force redoes all
    line = one_error_line(infer(str(folder), '--recursive', '--model', onnx,
                                '--out', str(out), '--quiet'))
    assert 'holds the outputs of another run (options differ)' in line
    assert '--force' in line
    forced = infer(str(folder), '--recursive', '--model', onnx, '--out',
                   str(out), '--quiet', '--force')
    assert '3 done, 0 skipped' in forced.stdout, forced.stdout


def test_video_frames_and_overlay_video(model, synthetic_root, tmp_path):
    _, _, onnx = model
    src = sorted(osp.join(d, f) for d, _, fs in os.walk(
        osp.join(synthetic_root, 'leftImg8bit', 'val')) for f in fs)
    img = cv2.imread(src[0])
    video = str(tmp_path / 'drive.mp4')
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 5,
                        (img.shape[1], img.shape[0]))
    for i in range(6):
        w.write(np.roll(img, 8 * i, axis=1))
    w.release()
    out = tmp_path / 'out'
    proc = infer(video, '--model', onnx, '--out', str(out), '--every', '2',
                 '--overlay', '--quiet')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '3 done' in proc.stdout
    frames = sorted(os.listdir(out / 'labels' / 'drive'))
    assert frames == ['000000.png', '000002.png', '000004.png']
    cap = cv2.VideoCapture(str(out / 'overlays' / 'drive.mp4'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_mistakes_are_one_error_line_each(model, folder, tmp_path):
    path, ckpt, onnx = model
    out = str(tmp_path / 'o')
    empty = tmp_path / 'nothing'
    empty.mkdir()
    line = one_error_line(infer(str(empty), '--model', onnx, '--out', out))
    assert 'the inputs hold no image or video' in line
    assert '--recursive' in line
    line = one_error_line(infer(str(folder), '--model', 'nope.onnx',
                                '--out', out))
    assert "model 'nope.onnx' does not exist" in line
    line = one_error_line(infer(str(folder), '--model', path, '--out', out))
    assert 'is a config: give its weights with --checkpoint' in line
    bad_video = tmp_path / 'broken.mp4'
    bad_video.write_bytes(b'not a video at all')
    line = one_error_line(infer(str(bad_video), '--model', onnx, '--out',
                                out))
    assert 'cannot be opened' in line
    line = one_error_line(infer(str(folder), '--model', ckpt, '--out', out))
    assert 'neither a deployed model file' in line
    line = one_error_line(infer(str(tmp_path / 'missing.png'), '--model',
                                onnx, '--out', out))
    assert "input '" in line and 'does not exist' in line
    from repseg.errors import UsageError
    from repseg.infer.outputs import Outputs
    with pytest.raises(UsageError, match='writes Cityscapes label ids, but '
                       'this model has other classes'):
        Outputs(out, ['cat', 'dog'], [[0, 0, 0]] * 2, label_ids=True)


def test_label_ids_for_the_cityscapes_server(model, folder, tmp_path):
    _, _, onnx = model
    train = infer(str(folder / 'a.png'), '--model', onnx, '--out',
                  str(tmp_path / 't'), '--quiet')
    ids = infer(str(folder / 'a.png'), '--model', onnx, '--out',
                str(tmp_path / 'i'), '--quiet', '--label-ids')
    assert train.returncode == ids.returncode == 0, ids.stderr[-2000:]
    a = cv2.imread(str(tmp_path / 't' / 'labels' / 'a.png'),
                   cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / 'i' / 'labels' / 'a.png'),
                   cv2.IMREAD_UNCHANGED)
    from repseg.datasets.cityscapes import TRAINID_TO_ID
    assert np.array_equal(b, TRAINID_TO_ID[a])
    assert set(np.unique(b)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23,
                                 24, 25, 26, 27, 28, 31, 32, 33}


def test_python_api_yields_a_result_per_image(model, folder, tmp_path):
    """... and, leaving ``with``, closes the PyTorch path's batching
    threads (batches of 2 here)."""
    import threading
    path, ckpt, _ = model
    before = set(threading.enumerate())
    with Segmenter(path, ckpt, settings=InferSettings(
            keep_labels=True, quiet=True, batch_size=2)) as seg:
        results = list(seg([str(folder / 'a.png'),
                            str(folder / 'corrupt.png')],
                           str(tmp_path / 'o')))
        batchers = [t for t in threading.enumerate()
                    if t.name == 'repseg-batcher' and t not in before]
        assert len(batchers) == 2   # the logits' and the class map's
    assert not any(t.is_alive() for t in batchers)
    assert seg.network is None
    assert [r.status for r in results] == ['done', 'failed']
    assert results[0].labels.shape == cv2.imread(
        str(folder / 'a.png')).shape[:2]
    assert results[0].files['labels'].endswith('a.png')
    assert 'not an image' in results[1].reason
    assert (seg.summary.done, seg.summary.failed) == (1, 1)


def test_sigkill_leaves_no_half_written_file(model, synthetic_root,
                                             tmp_path):
    """Killed mid-run (every file write slowed down so that the kill lands
    inside one): every file under its final name is complete; the rerun
    finishes the rest, each image done exactly once, and removes the
    killed run's temporaries."""
    path, ckpt, _ = model
    src = sorted(osp.join(d, f) for d, _, fs in os.walk(
        osp.join(synthetic_root, 'leftImg8bit', 'val')) for f in fs)
    img = cv2.imread(src[0])
    many = tmp_path / 'many'
    many.mkdir()
    for i in range(120):
        cv2.imwrite(str(many / f'{i:03d}.png'), np.roll(img, i, axis=1))
    out = tmp_path / 'out'
    args = [sys.executable, TOOL, str(many), '--model', path, '--checkpoint',
            ckpt, '--out', str(out), '--overlay', '--quiet']
    slow = [sys.executable, osp.join(osp.dirname(__file__),
                                     'slow_writes.py')] + args[1:]
    proc = subprocess.Popen(slow, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    labels = out / 'labels'
    while time.time() < deadline and proc.poll() is None and (
            not labels.is_dir() or len(os.listdir(labels)) < 10):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted(labels.glob('*.png')) + sorted(
        (out / 'overlays').glob('*.png'))
    assert 10 <= len(written) < 240, len(written)
    for f in written:      # complete files only under the final names
        assert cv2.imread(str(f), cv2.IMREAD_UNCHANGED) is not None, f
    done = (out / 'done.txt').read_text().split()
    assert all((labels / f'{k}.png').is_file() for k in done)
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f'{120 - len(done)} done, {len(done)} skipped' in again.stdout
    done = (out / 'done.txt').read_text().split()
    assert sorted(done) == sorted(f'{i:03d}' for i in range(120))
    leftovers = [f for _, _, fs in os.walk(out) for f in fs
                 if '.tmp-' in f]
    assert not leftovers, leftovers


def test_two_shards_make_the_single_run(model, folder, tmp_path):
    """--shard 1/2 and 2/2 into one folder, at the same time: together
    the label maps of one run, byte for byte, each image done once."""
    _, _, onnx = model
    good = [str(folder / 'a.png'), str(folder / 'b.jpg'),
            str(folder / 'sub' / 'c.png')]
    single = infer(*good, '--model', onnx, '--out', str(tmp_path / 'one'),
                   '--quiet', '--threads', '1')
    assert single.returncode == 0, single.stderr[-2000:]
    shared = str(tmp_path / 'shared')
    procs = [subprocess.Popen(
        [sys.executable, TOOL, *good, '--model', onnx, '--out', shared,
         '--quiet', '--threads', '1', '--shard', f'{k}/2'], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (1, 2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    counts = sorted(int(o.split(' done')[0].split()[-1]) for o, _ in outs)
    assert counts == [1, 2]
    done = open(osp.join(shared, 'done.txt')).read().split()
    # two roots (street/ and street/sub/): a subfolder each
    keys = ['street/a', 'street/b', 'sub/c']
    assert sorted(done) == keys
    for key in keys:
        assert open(osp.join(shared, 'labels', f'{key}.png'), 'rb').read() \
            == open(tmp_path / 'one' / 'labels' / f'{key}.png', 'rb').read()
    line = one_error_line(infer(*good, '--model', onnx, '--out', shared,
                                '--shard', '3/2'))
    assert '--shard 3/2 is not K/N with 1 <= K <= N' in line


@pytest.mark.parametrize('suffix', ['.onnx', '.xml'])
def test_deployed_files_run_without_the_training_stack(model, folder,
                                                       tmp_path, suffix):
    """Where torch, mmcv, mmengine and mmseg cannot be imported (the
    deployment install), tools/infer.py runs a deployed file and writes
    the same label maps, byte for byte, as the full install (the same
    threads per request)."""
    path, ckpt, onnx = model
    model_file = onnx
    if suffix == '.xml':
        model_file = str(tmp_path / 'm.xml')
        export_model(load_cfg(path), ckpt, model_file,
                     ExportSettings(backend='openvino', verify=False))
    args = [str(folder), '--recursive', '--model', model_file, '--quiet',
            '--threads', '1', '--mode', 'latency']
    full = infer(*args, '--out', str(tmp_path / 'full'))
    bare = subprocess.run(
        [sys.executable, osp.join(osp.dirname(__file__),
                                  'without_training_stack.py'), TOOL, *args,
         '--out', str(tmp_path / 'bare')], capture_output=True, text=True,
        cwd=ROOT, timeout=600)
    assert full.returncode == bare.returncode == 1   # the two bad files
    assert '3 done' in bare.stdout, bare.stderr[-3000:]
    for key in ('a', 'b', 'sub/c'):
        assert open(tmp_path / 'bare' / 'labels' / f'{key}.png', 'rb').read(
        ) == open(tmp_path / 'full' / 'labels' / f'{key}.png', 'rb').read()
    # the package itself imports there, and says what needs the stack
    probe = tmp_path / 'probe.py'
    probe.write_text('import repseg\ntry:\n    repseg.RepVGG\n'
                     'except ImportError as e:\n    print(e)\n')
    out = subprocess.run(
        [sys.executable, osp.join(osp.dirname(__file__),
                                  'without_training_stack.py'), str(probe)],
        capture_output=True, text=True, cwd=ROOT)
    assert 'repseg.RepVGG needs the training stack' in out.stdout, \
        out.stderr[-2000:]
