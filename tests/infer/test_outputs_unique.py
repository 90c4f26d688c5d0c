"""Issue 35, item 2: every input has its own outputs, nothing lost and
nothing mixed. Names that differ only by extension or case get distinct
outputs (folders, globs and .txt lists alike, decided before sharding);
``areas.csv`` is in the inputs' order, byte for byte the same for two runs
and for a run killed and resumed; ``--force`` leaves nothing of the
earlier run and deletes nothing that is not a run's output; "options
differ" names each difference."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from repseg.errors import UsageError
from repseg.infer import InferSettings, Segmenter
from repseg.infer.sources import Item, collect, unique_keys, with_root_names
from tests.utils import ROOT, random_onnx

TOOL = osp.join(ROOT, 'tools', 'infer.py')


def keys(inputs, recursive=False):
    """{path relative to the cwd: key} of a job's inputs."""
    sources = unique_keys(with_root_names(collect(inputs, recursive)))
    return {osp.relpath(s.path): Item(s).key for s in sources}


def touch(*paths):
    for p in paths:
        os.makedirs(osp.dirname(p) or '.', exist_ok=True)
        open(p, 'wb').close()


# -- the rule, on file names alone -----------------------------------------

def test_names_differing_by_extension_or_case_get_their_own_keys(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch('f/y.jpg', 'f/y.png', 'f/z.png', 'f/Q.png', 'f/q.JPG',
          'f/R.png', 'f/r.png', 'f/y.png.jpg', 'f/sub/z.png')
    got = keys(['f'], recursive=True)
    assert got == {
        'f/y.jpg': 'y.jpg', 'f/y.png': 'y.png', 'f/z.png': 'z',
        # the same ignoring case: the extensions kept
        'f/Q.png': 'Q.png', 'f/q.JPG': 'q.JPG',
        # the same with their extensions too: numbered in path order
        'f/R.png': 'R.png', 'f/r.png': 'r.png~2',
        # a name the rule made ('y.png') taken by another input already
        'f/y.png.jpg': 'y.png.jpg', 'f/sub/z.png': 'sub/z'}
    folded = [k.casefold() for k in got.values()]
    assert len(set(folded)) == len(folded)
    # a lone name keeps its short key; globs and files the same rule
    assert keys(['f/z.png']) == {'f/z.png': 'z'}
    assert keys(['f/y.[jp][pn]g']) == {'f/y.jpg': 'y.jpg', 'f/y.png': 'y.png'}
    assert keys(['f/y.jpg', 'f/y.png']) == {'f/y.jpg': 'y.jpg',
                                            'f/y.png': 'y.png'}


def test_a_video_named_like_a_folder_of_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch('v/drive.mp4', 'v/drive/000000.png', 'v/walk.mp4')
    got = keys(['v'], recursive=True)
    assert got == {'v/drive.mp4': 'drive.mp4', 'v/walk.mp4': 'walk',
                   'v/drive/000000.png': 'drive/000000'}


def test_a_list_gives_the_layout_of_its_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch('trip1/day1/a.png', 'trip2/day1/b.png', 'trip1/day2/c.png',
          'a/y.jpg', 'a/y.png')
    (tmp_path / 'l.txt').write_text(
        'trip1/day1/a.png\ntrip2/day1/b.png\ntrip1/day2/c.png\n')
    folders = keys(['trip1', 'trip2'], recursive=True)
    assert keys(['l.txt']) == folders == {
        'trip1/day1/a.png': 'trip1/day1/a',
        'trip2/day1/b.png': 'trip2/day1/b',
        'trip1/day2/c.png': 'trip1/day2/c'}
    # a list of one folder's files: that folder's layout
    (tmp_path / 'one.txt').write_text('a/y.jpg\n# a comment\na/y.png\n')
    assert keys(['one.txt']) == keys(['a']) == {'a/y.jpg': 'y.jpg',
                                                'a/y.png': 'y.png'}
    # a list naming folders: as on the command line
    (tmp_path / 'dirs.txt').write_text('trip1\ntrip2\n')
    assert keys(['dirs.txt'], recursive=True) == folders


def test_the_rule_comes_before_the_shards(tmp_path, monkeypatch):
    """Each shard takes its share of names decided from the whole job:
    y.jpg and y.png in different shards still keep their extensions."""
    from repseg.infer.engine import plan
    monkeypatch.chdir(tmp_path)
    touch('f/y.jpg', 'f/y.png')
    shards = [{Item(s).key for s in plan(['f'], InferSettings(
        shard=f'{k}/2'))[0]} for k in (1, 2)]
    assert shards == [{'y.jpg'}, {'y.png'}]


def test_an_output_folder_inside_an_input_is_not_searched(tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch('p/a.png', 'p/out/labels/a.png', 'p/day/b.png')
    (tmp_path / 'p' / 'out' / 'manifest.json').write_text(
        '{"model": {}, "options": {}}')
    assert keys(['p'], recursive=True) == {'p/a.png': 'a',
                                           'p/day/b.png': 'day/b'}


# -- runs with a model -----------------------------------------------------

@pytest.fixture(scope='module')
def onnx(synthetic_root, tmp_path_factory):
    return random_onnx(synthetic_root,
                       tmp_path_factory.mktemp('outputs_unique'))[2]


@pytest.fixture(scope='module')
def images(synthetic_root):
    """Six different small images (BGR)."""
    src = sorted(osp.join(d, f) for d, _, fs in os.walk(
        osp.join(synthetic_root, 'leftImg8bit')) for f in fs)
    img = cv2.resize(cv2.imread(src[0]), (128, 64))
    return [np.roll(img, 20 * i, axis=1) for i in range(6)]


def segment(onnx, inputs, out, **options):
    options = dict(dict(quiet=True, threads=2), **options)
    with Segmenter(onnx, settings=InferSettings(**options)) as seg:
        results = list(seg(inputs, str(out)))
    return seg.summary, results


def label(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_y_jpg_and_y_png_get_two_label_maps(onnx, images, tmp_path):
    """...each the one the image gives alone, with a row each, listed
    once each; a .txt list of the two the same."""
    f = tmp_path / 'f'
    f.mkdir()
    cv2.imwrite(str(f / 'y.png'), images[0])
    cv2.imwrite(str(f / 'y.jpg'), images[1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(f / 'z.png'), images[2])
    out = tmp_path / 'out'
    summary, results = segment(onnx, [str(f)], out, areas=True)
    assert summary.done == 3
    assert sorted(r.key for r in results) == ['y.jpg', 'y.png', 'z']
    assert sorted(os.listdir(out / 'labels')) == [
        'y.jpg.png', 'y.png.png', 'z.png']
    for name in ('y.png', 'y.jpg'):
        segment(onnx, [str(f / name)], tmp_path / name)
        assert np.array_equal(label(out / 'labels' / f'{name}.png'),
                              label(tmp_path / name / 'labels' / 'y.png'))
    assert not np.array_equal(label(out / 'labels' / 'y.jpg.png'),
                              label(out / 'labels' / 'y.png.png'))
    assert sorted((out / 'done.txt').read_text().split()) == [
        'y.jpg', 'y.png', 'z']
    rows = (out / 'areas.csv').read_text().splitlines()
    assert [r.split(',')[0] for r in rows[1:]] == ['y.jpg', 'y.png', 'z']
    (tmp_path / 'l.txt').write_text('f/y.jpg\nf/y.png\n')
    segment(onnx, [str(tmp_path / 'l.txt')], tmp_path / 'listed')
    assert sorted(os.listdir(tmp_path / 'listed' / 'labels')) == [
        'y.jpg.png', 'y.png.png']


def many(images, folder, n=24):
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f'{i:03d}.png'), images[i % len(images)])
    return folder


def test_areas_in_input_order_and_the_same_bytes(onnx, images, tmp_path):
    """Two runs: the same bytes, rows in input order. A run whose last
    row was cut short by a kill (or never written after its done.txt
    line) and whose image failed once: resumed, the same bytes."""
    folder = many(images, tmp_path / 'in')
    order = [f'{i:03d}' for i in range(24)]
    a, b = tmp_path / 'a', tmp_path / 'b'
    segment(onnx, [str(folder)], a, areas=True)
    segment(onnx, [str(folder)], b, areas=True)
    expected = (a / 'areas.csv').read_bytes()
    assert (b / 'areas.csv').read_bytes() == expected
    rows = expected.decode().splitlines()
    assert [r.split(',')[0] for r in rows[1:]] == order
    # a kill: row 23 cut in its last number, row 22 not written (its
    # done line is)
    text = expected.decode()
    lines = text.splitlines(keepends=True)
    (b / 'areas.csv').write_text(''.join(lines[:-2]) + lines[-1][:-3],
                                 newline='')
    os.remove(b / 'labels' / '005.png')     # redone: its row rewritten
    summary, _ = segment(onnx, [str(folder)], b, areas=True)
    assert (summary.done, summary.skipped) == (3, 21)
    assert (b / 'areas.csv').read_bytes() == expected
    assert sorted((b / 'done.txt').read_text().split()) == order
    # an image that failed, segmented in a later run: its row in place
    c = tmp_path / 'c'
    good = (folder / '007.png').read_bytes()
    (folder / '007.png').write_bytes(b'broken')
    summary, _ = segment(onnx, [str(folder)], c, areas=True)
    assert summary.failed == 1
    (folder / '007.png').write_bytes(good)
    summary, _ = segment(onnx, [str(folder)], c, areas=True)
    assert (summary.done, summary.skipped) == (1, 23)
    assert (c / 'areas.csv').read_bytes() == expected
    assert not (c / 'failures.txt').exists()


@pytest.mark.slow
def test_killed_and_resumed_gives_the_uninterrupted_areas(onnx, images,
                                                          tmp_path):
    """SIGKILL in the middle of a run (every file write slowed down), then
    a rerun: areas.csv is byte for byte the uninterrupted run's."""
    folder = many(images, tmp_path / 'in', 40)
    args = [str(folder), '--model', onnx, '--areas', '--quiet',
            '--threads', '2']
    segment(onnx, [str(folder)], tmp_path / 'whole', areas=True)
    out = tmp_path / 'killed'
    slow = subprocess.Popen(
        [sys.executable, osp.join(osp.dirname(__file__), 'slow_writes.py'),
         TOOL, *args, '--out', str(out)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    labels, deadline = out / 'labels', time.time() + 300
    while time.time() < deadline and slow.poll() is None and (
            not labels.is_dir() or len(os.listdir(labels)) < 8):
        time.sleep(0.02)
    assert slow.poll() is None, slow.communicate()[1][-3000:]
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    done = (out / 'done.txt').read_text().split()
    assert 0 < len(done) < 40
    again = subprocess.run([sys.executable, TOOL, *args, '--out', str(out)],
                           cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / 'areas.csv').read_bytes() == (
        tmp_path / 'whole' / 'areas.csv').read_bytes()
    assert sorted((out / 'done.txt').read_text().split()) == [
        f'{i:03d}' for i in range(40)]


def test_force_leaves_nothing_of_the_earlier_run(onnx, images, tmp_path):
    folder = many(images, tmp_path / 'in', 4)
    (folder / 'bad.png').write_bytes(b'broken')
    out = tmp_path / 'out'
    segment(onnx, [str(folder)], out, overlay=True, areas=True)
    assert (out / 'failures.txt').is_file()
    (out / 'labels' / 'notes.txt').write_text('mine')
    (out / 'README').write_text('mine too')
    (folder / 'bad.png').unlink()
    summary, _ = segment(onnx, [str(folder / '001.png')], out, force=True)
    assert summary.done == 1
    left = sorted(osp.relpath(osp.join(d, f), out)
                  for d, _, fs in os.walk(out) for f in fs)
    assert left == ['README', 'done.txt', 'labels/001.png',
                    'labels/notes.txt', 'manifest.json']
    assert (out / 'done.txt').read_text() == '001\n'
    # a folder that is not a run's: never cleaned
    theirs = tmp_path / 'theirs'
    (theirs / 'labels').mkdir(parents=True)
    (theirs / 'labels' / '001.png').write_bytes(b'ground truth')
    with pytest.raises(UsageError, match=r"holds files that are not an "
                       r"inference run's, some with the names a run writes "
                       r"\(labels\)"):
        segment(onnx, [str(folder / '001.png')], theirs, force=True)
    assert (theirs / 'labels' / '001.png').read_bytes() == b'ground truth'
    # beside files with other names, --force writes
    beside = tmp_path / 'beside'
    beside.mkdir()
    (beside / 'photo.jpg').write_bytes(b'mine')
    with pytest.raises(UsageError, match='force=True to write into it'):
        segment(onnx, [str(folder / '001.png')], beside)
    segment(onnx, [str(folder / '001.png')], beside, force=True)
    assert (beside / 'photo.jpg').read_bytes() == b'mine'
    assert (beside / 'labels' / '001.png').is_file()


def test_options_differ_names_each_change(onnx, images, tmp_path):
    folder = many(images, tmp_path / 'in', 2)
    out = tmp_path / 'out'
    segment(onnx, [str(folder)], out, overlay=True)
    with pytest.raises(UsageError) as e:
        segment(onnx, [str(folder)], out, areas=True, opacity=0.3)
    line = str(e.value)
    assert '(options differ): overlay: True -> False; opacity: 0.5 -> 0.3; ' \
        'areas: False -> True. Give another output folder' in line, line
    other = str(tmp_path / 'other.onnx')
    with open(onnx, 'rb') as a, open(other, 'wb') as b:
        b.write(a.read())
    with pytest.raises(UsageError) as e:
        segment(other, [str(folder)], out, overlay=True)
    line = str(e.value)
    assert f'(model differs): the model was {osp.abspath(onnx)} (' in line
    assert f'it is now {osp.abspath(other)} (' in line, line


def test_the_tool_names_the_options_as_flags(onnx, images, tmp_path):
    """The line tools/infer.py prints (the error rendered with its
    parser, as tools/_cli.py does)."""
    from tests.utils import tool_module
    folder = many(images, tmp_path / 'in', 1)
    out = tmp_path / 'out'
    segment(onnx, [str(folder)], out, label_ids=True)
    with pytest.raises(UsageError) as e:
        segment(onnx, [str(folder)], out, overlay=True)
    line = e.value.render(tool_module(TOOL).build_parser())
    assert 'holds the outputs of another run (options differ): ' \
        '--label-ids: True -> False; --overlay: False -> True. Give ' \
        'another output folder, or --force' in line, line
