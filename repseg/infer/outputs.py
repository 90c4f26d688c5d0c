# Copyright (c) repseg contributors. All rights reserved.
"""What inference writes, and how: per image a label map (PNG, train ids
or Cityscapes label ids), optionally an overlay (PNG) and a row of class
areas (CSV); per video an overlay video; every file written atomically (a
temporary name, then ``os.replace``: a run killed at any moment leaves no
half-written file); and the run's manifest, done list and failures, with
which a rerun resumes. ``areas.csv`` is appended to as images are counted
(in input order) and rewritten whole, in the inputs' order, at the end of
the run: a run killed at any moment and resumed gives the file of an
uninterrupted run."""
import csv
import io
import json
import os
import os.path as osp
import re
import socket
import threading
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from ..errors import UsageError, opt
from .sources import RUN_MANIFEST, Item, read_run_manifest

MANIFEST = RUN_MANIFEST
#: temporary files name their host and process: several machines may write
#: into one shared folder, and only this host's dead processes' are stale
_HOST = socket.gethostname().replace('-', '_').replace('.', '_') or 'host'
DONE = 'done.txt'
FAILURES = 'failures.txt'
AREAS = 'areas.csv'
#: the files of a run at the top of its folder (any shard's too)
_RUN_FILES = re.compile(r'^(done\.txt|failures(\.shard-\d+-of-\d+)?\.txt'
                        r'|areas(\.shard-\d+-of-\d+)?\.csv)$')
#: the folders of a run's images, and the suffixes of the files in them
_RUN_FOLDERS = ('labels', 'overlays')
_OUTPUT_SUFFIXES = ('.png', '.mp4')


def write_atomic(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same
    folder (renamed into place: never half-written)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp-{_HOST}-{os.getpid()}-{threading.get_ident()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return path


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.png', image)
    if not ok:
        raise OSError('OpenCV could not encode a PNG')
    return buf.tobytes()


def overlay(img: np.ndarray, labels: np.ndarray, palette: Sequence,
            opacity: float) -> np.ndarray:
    """The BGR image with the label colours (RGB palette) blended in."""
    pal = np.asarray(palette, np.uint8)[:, ::-1]
    colours = pal[np.clip(labels, 0, len(pal) - 1)]
    return cv2.addWeighted(img, 1 - opacity, colours, opacity, 0)


class Outputs:
    """The output folder of one inference run.

    Args:
        out_dir (str): the folder.
        classes, palette: the model's (for overlays and the CSV header).
        overlay (bool), opacity (float): write overlays.
        label_ids (bool): label maps in Cityscapes label ids (for its
            evaluation server) instead of train ids.
        areas (bool): a row of class pixel shares per image
            (:meth:`shares`) in ``areas_file``: :meth:`add_areas` appends
            an image's row (the driver counts the images in input order),
            :meth:`finish_areas` rewrites the file in the inputs' order.
        areas_file (str): the CSV's name (one writer each: a shard writes
            its own; on Ray the driver writes the rows the workers return).
    """

    def __init__(self, out_dir: str, classes: Sequence[str],
                 palette: Sequence, overlay: bool = False,
                 opacity: float = 0.5, label_ids: bool = False,
                 areas: bool = False, areas_file: str = AREAS):
        self.out_dir = out_dir
        self.classes, self.palette = list(classes), list(palette)
        self.overlay, self.opacity = overlay, opacity
        self.areas, self.areas_file = areas, areas_file
        self._lock = threading.Lock()
        self._rows: Dict[str, str] = {}
        self._id_table = None
        if label_ids:
            from ..datasets.cityscapes import CLASSES, TRAINID_TO_ID
            if tuple(self.classes) != tuple(CLASSES):
                raise UsageError(
                    f'{opt("label_ids")} writes Cityscapes label ids, but '
                    f'this model has other classes ({len(self.classes)}: '
                    f'{", ".join(self.classes[:4])}, ...): leave it out to '
                    'write the train ids')
            self._id_table = TRAINID_TO_ID
        if overlay and not self.palette:
            raise UsageError(f'{opt("overlay")} needs the classes\' palette, '
                             'which this model does not record: give '
                             f'{opt("config", "CONFIG")}')

    def paths(self, item: Item) -> Dict[str, str]:
        """The files of one image (label map; overlay)."""
        out = dict(labels=osp.join(self.out_dir, 'labels',
                                   item.key + '.png'))
        if self.overlay:
            out['overlay'] = osp.join(self.out_dir, 'overlays',
                                      item.key + '.png')
        return out

    def write(self, item: Item, img: np.ndarray,
              labels: np.ndarray) -> Dict[str, str]:
        """Every file of one image, each atomically; returns them."""
        paths = self.paths(item)
        table = self._id_table
        maps = labels if table is None else table[labels]
        write_atomic(paths['labels'], encode_png(maps))
        if self.overlay:
            write_atomic(paths['overlay'], encode_png(
                overlay(img, labels, self.palette, self.opacity)))
        return paths

    def shares(self, labels: np.ndarray) -> List[float]:
        """The share of the image's pixels each class has."""
        counts = np.bincount(labels.ravel(), minlength=len(self.classes))
        return (counts[:len(self.classes)] / max(labels.size, 1)).tolist()

    def _row(self, key: str, shares: Sequence[float]) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow([key] + [f'{v:.6f}' for v in shares])
        return buf.getvalue()

    def _header(self) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow(['image'] + self.classes)
        return buf.getvalue()

    def load_areas(self) -> None:
        """Read the rows an earlier run of this folder wrote (a row cut
        short by a kill is dropped: its image is redone) and rewrite the
        file with them alone, so that appending goes on from whole rows."""
        if not self.areas:
            return
        path = osp.join(self.out_dir, self.areas_file)
        if not osp.exists(path):
            return
        with open(path, newline='', encoding='utf-8', errors='replace') as f:
            text = f.read()
        records = list(csv.reader(io.StringIO(text, newline='')))[1:]
        if records and not text.endswith('\n'):
            records.pop()     # the last row, cut short by a kill
        rows = {}
        for cells in records:
            if len(cells) != len(self.classes) + 1:
                continue
            try:
                [float(v) for v in cells[1:]]
            except ValueError:
                continue
            rows.pop(cells[0], None)   # the last row of a key counts
            buf = io.StringIO()
            csv.writer(buf).writerow(cells)
            rows[cells[0]] = buf.getvalue()
        with self._lock:
            self._rows = rows
            write_atomic(path, (self._header() + ''.join(
                rows.values())).encode())

    def has_areas(self, key: str) -> bool:
        """Whether the areas file holds a row of ``key``."""
        return key in self._rows

    def add_areas(self, key: str, shares: Sequence[float]) -> None:
        """One row of :attr:`areas_file` (its header first), appended."""
        path = osp.join(self.out_dir, self.areas_file)
        row = self._row(key, shares)
        with self._lock:
            new = not osp.exists(path)
            with open(path, 'a', newline='', encoding='utf-8') as f:
                f.write((self._header() if new else '') + row)
            self._rows.pop(key, None)
            self._rows[key] = row

    def finish_areas(self, order: Sequence[str]) -> Optional[str]:
        """Rewrite :attr:`areas_file` atomically with one row per image in
        the inputs' ``order`` (keys), then the rows of images that are not
        in this job (earlier runs'), as they were; returns its path."""
        if not self.areas:
            return None
        path = osp.join(self.out_dir, self.areas_file)
        with self._lock:
            rows = dict(self._rows)
        if not rows and not osp.exists(path):
            return None
        first = [k for k in dict.fromkeys(order) if k in rows]
        taken = set(first)
        rest = [k for k in rows if k not in taken]
        return write_atomic(path, (self._header() + ''.join(
            rows[k] for k in first + rest)).encode())

    def video(self, key: str, frames: List[str], fps: float) -> str:
        """The overlay video of a video's frames (their overlay PNGs in
        order), written atomically; returns its path."""
        path = osp.join(self.out_dir, 'overlays', key + '.mp4')
        first = cv2.imread(frames[0])
        h, w = first.shape[:2]
        tmp = path[:-4] + f'.tmp-{_HOST}-{os.getpid()}-0.mp4'
        os.makedirs(osp.dirname(path), exist_ok=True)
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*'mp4v'),
                                 fps or 25.0, (w, h))
        try:
            for f in frames:
                writer.write(cv2.imread(f))
        finally:
            writer.release()
        os.replace(tmp, path)
        return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out_dir: str) -> int:
    """Remove the temporary files of runs on this host that were killed
    before they renamed them into place (``NAME.tmp-HOST-PID-THREAD``;
    files of a process still running, or of another host, are left
    alone). Returns how many went."""
    removed = 0
    for dirpath, _, files in os.walk(out_dir):
        for f in files:
            _, sep, tail = f.rpartition('.tmp-')
            parts = tail.split('-')
            if sep and len(parts) >= 3 and parts[0] == _HOST and \
                    parts[1].isdigit() and not _alive(int(parts[1])):
                os.remove(osp.join(dirpath, f))
                removed += 1
    return removed


def _when(mtime) -> str:
    try:
        return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(mtime))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(mtime)


def _model_text(model) -> str:
    """A model's identity (the manifest's) as a user recognizes it."""
    if not isinstance(model, dict):
        return str(model)
    text = str(model.get('file', '?'))
    if model.get('config'):
        text += f' with the config {model["config"]}'
    facts = ([f'{model["bytes"]} bytes'] if 'bytes' in model else []) + (
        ['modified ' + _when(model['mtime'])] if 'mtime' in model else [])
    return text + (f' ({", ".join(facts)})' if facts else '')


_NONE = object()


def _value(options: dict, key: str) -> str:
    v = options.get(key, _NONE)
    return '(not set)' if v is _NONE else str(v)


def differences(old: dict, new: dict) -> tuple:
    """(what differs: 'options', 'model' or 'model and options', the
    differences one by one: ``model: A -> B``, ``overlay: False -> True``
    with the options named by :func:`opt`) between two manifests."""
    new = json.loads(json.dumps(new))
    out, what = [], []
    if old.get('model') != new.get('model'):
        was, now = _model_text(old.get('model')), _model_text(
            new.get('model'))
        if was == now:
            now += ', another record'
        out.append(f'the model was {was}, it is now {now}')
        what.append('model')
    oo, no = old.get('options') or {}, new.get('options') or {}
    changed = [k for k in list(no) + [k for k in oo if k not in no]
               if oo.get(k, _NONE) != no.get(k, _NONE)]
    out += [f'{opt(k, None)}: {_value(oo, k)} -> {_value(no, k)}'
            for k in changed]
    if changed:
        what.append('options')
    rest = sorted(k for k in set(old) | set(new) if k not in (
        'model', 'options') and old.get(k) != new.get(k))
    out += [f'{k}: {old.get(k)} -> {new.get(k)}' for k in rest]
    return ' and '.join(what or ['the manifest']), out


def check_out_dir(out_dir: str, force: bool = False,
                  shard: bool = False) -> None:
    """The mistakes an output folder can be refused for before anything
    runs: a file, not a folder; ``force`` with ``shard``."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise UsageError(f'the output folder {out_dir!r} is a file: give a '
                         'folder (a new one, or an earlier run\'s to resume '
                         'it)')
    if force and shard:
        raise UsageError(
            f'{opt("force")} with {opt("shard", None)}: each shard would '
            'delete what the others write into the output folder at the same '
            f'time; delete {out_dir!r} (or an earlier run\'s outputs in it) '
            f'first, then run the shards without {opt("force")}')


def _run_files(out_dir: str) -> List[str]:
    """The names at the top of ``out_dir`` that an inference run writes."""
    return sorted(f for f in os.listdir(out_dir)
                  if f == MANIFEST or f in _RUN_FOLDERS or _RUN_FILES.match(f))


def clear_run(out_dir: str) -> int:
    """Delete the outputs of the inference run in ``out_dir`` (a folder
    with its manifest): ``done.txt``, ``failures*.txt``, ``areas*.csv``
    and the label maps, overlays and overlay videos (``.png``, ``.mp4``)
    under ``labels/`` and ``overlays/``, with the folders they leave
    empty. Other files stay. Returns how many files went; a file that
    cannot be deleted is a UsageError."""
    removed = 0
    try:
        for f in os.listdir(out_dir):
            p = osp.join(out_dir, f)
            if _RUN_FILES.match(f) and osp.isfile(p):
                os.remove(p)
                removed += 1
        for d in _RUN_FOLDERS:
            top = osp.join(out_dir, d)
            if not osp.isdir(top) or osp.islink(top):
                continue
            for dirpath, _, files in os.walk(top, topdown=False):
                for f in files:
                    if f.lower().endswith(_OUTPUT_SUFFIXES) and \
                            '.tmp-' not in f:
                        os.remove(osp.join(dirpath, f))
                        removed += 1
                if not os.listdir(dirpath):
                    os.rmdir(dirpath)
    except OSError as e:
        raise UsageError(
            f'{opt("force")} cannot delete the earlier run\'s outputs in '
            f'{out_dir!r} ({e.filename}: {e.strerror}): make them deletable, '
            'or give another output folder') from None
    return removed


class Manifest:
    """``manifest.json`` (the model and the options that decide the
    outputs), ``done.txt`` (one line per finished image, appended after its
    files are in place; each image once) and ``failures.txt`` of an output
    folder.

    A folder with a run's manifest resumes when the model and the options
    are the same; otherwise it is refused with one line naming each
    difference, unless ``force``, which first deletes every output of the
    earlier run (:func:`clear_run`). A folder without a run's manifest must
    be empty, or, with ``force``, hold none of the names a run writes
    (``labels/``, ``overlays/``, ``manifest.json``, ``done.txt``,
    ``failures*.txt``, ``areas*.csv``): nothing a run did not write is
    deleted or overwritten. ``shard``: this process is one of several
    writing into the folder (``force`` is then refused).
    """

    def __init__(self, out_dir: str, description: dict, force: bool,
                 failures: str = FAILURES, areas: str = AREAS,
                 shard: bool = False):
        self.out_dir = out_dir
        self.failures = failures
        check_out_dir(out_dir, force, shard)
        path = osp.join(out_dir, MANIFEST)
        self.done = set()
        old = read_run_manifest(out_dir) if osp.isdir(out_dir) else None
        if old is not None and force:
            clear_run(out_dir)
        elif old is not None:
            if old != json.loads(json.dumps(description)):
                what, diffs = differences(old, description)
                verb = 'differ' if what.endswith('options') else 'differs'
                raise UsageError(
                    f'{out_dir!r} holds the outputs of another run ({what} '
                    f'{verb}): '
                    + '; '.join(diffs) + '. Give another output folder, or '
                    f'{opt("force")} to redo everything there')
            if osp.isfile(osp.join(out_dir, DONE)):
                with open(osp.join(out_dir, DONE), encoding='utf-8',
                          errors='replace') as f:
                    self.done = {ln.rstrip('\n') for ln in f if ln.strip()}
        elif osp.isdir(out_dir):
            theirs = [f for f in os.listdir(out_dir) if '.tmp-' not in f]
            ours = _run_files(out_dir)
            damaged = (f' (its {MANIFEST} is not an inference run\'s, or is '
                       'damaged)' if MANIFEST in ours else '')
            if theirs and not force:
                raise UsageError(
                    f'{out_dir!r} exists and holds files that are not an '
                    f'inference run\'s{damaged}: give an empty or new folder, '
                    f'or {opt("force")} to write into it beside them')
            if ours:
                raise UsageError(
                    f'{out_dir!r} holds files that are not an inference '
                    f'run\'s{damaged}, some with the names a run writes '
                    f'({", ".join(ours[:4])}): give an empty or new folder '
                    f'({opt("force")} deletes only the outputs of a run, '
                    f'in a folder with its {MANIFEST})')
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise UsageError(f'the output folder {out_dir!r} cannot be '
                             f'created ({e.strerror}): give a folder you can '
                             'write to') from None
        remove_stale_temporaries(out_dir)
        write_atomic(path, json.dumps(description, indent=2).encode())
        self._lock = threading.Lock()

    def finished(self, key: str) -> None:
        """List the image of ``key`` in ``done.txt`` (once: an image redone
        by a rerun is not listed again)."""
        with self._lock:
            if key in self.done:
                return
            with open(osp.join(self.out_dir, DONE), 'a',
                      encoding='utf-8') as f:
                f.write(key + '\n')
            self.done.add(key)

    def write_failures(self, failures: List[tuple]) -> Optional[str]:
        path = osp.join(self.out_dir, self.failures)
        if not failures:
            if osp.exists(path):
                os.remove(path)
            return None
        write_atomic(path, ''.join(f'{p}\t{why}\n'
                                   for p, why in failures).encode())
        return path


__all__ = ['Outputs', 'Manifest', 'write_atomic', 'overlay', 'check_out_dir',
           'clear_run', 'differences', 'MANIFEST', 'DONE', 'FAILURES',
           'AREAS']
