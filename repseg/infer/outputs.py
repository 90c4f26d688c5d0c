# Copyright (c) repseg contributors. All rights reserved.
"""What inference writes, and how: per image a label map (PNG, train ids
or Cityscapes label ids), optionally an overlay (PNG) and a row of class
areas (CSV); per video an overlay video; every file written atomically (a
temporary name, then ``os.replace``: a run killed at any moment leaves no
half-written file); and the run's manifest, done list and failures, with
which a rerun resumes."""
import csv
import json
import os
import os.path as osp
import socket
import threading
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from ..errors import UsageError, opt
from .sources import Item

MANIFEST = 'manifest.json'
#: temporary files name their host and process: several machines may write
#: into one shared folder, and only this host's dead processes' are stale
_HOST = socket.gethostname().replace('-', '_').replace('.', '_') or 'host'
DONE = 'done.txt'
FAILURES = 'failures.txt'
AREAS = 'areas.csv'


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
        areas (bool): a row of class pixel shares per image in
            ``areas_file``.
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
        if self.areas:
            self.add_areas(item.key, self.shares(labels))
        return paths

    def shares(self, labels: np.ndarray) -> List[float]:
        """The share of the image's pixels each class has."""
        counts = np.bincount(labels.ravel(), minlength=len(self.classes))
        return (counts[:len(self.classes)] / max(labels.size, 1)).tolist()

    def add_areas(self, key: str, shares: Sequence[float]) -> None:
        """One row of :attr:`areas_file` (its header first)."""
        path = osp.join(self.out_dir, self.areas_file)
        with self._lock:
            new = not osp.exists(path)
            with open(path, 'a', newline='') as f:
                w = csv.writer(f)
                if new:
                    w.writerow(['image'] + self.classes)
                w.writerow([key] + [f'{v:.6f}' for v in shares])

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


class Manifest:
    """``manifest.json`` (the model and the options that decide the
    outputs), ``done.txt`` (one line per finished image, appended after its
    files are in place) and ``failures.txt`` of an output folder."""

    def __init__(self, out_dir: str, description: dict, force: bool,
                 failures: str = FAILURES, areas: str = AREAS):
        self.out_dir = out_dir
        self.failures = failures
        path = osp.join(out_dir, MANIFEST)
        self.done = set()
        if osp.isfile(path) and not force:
            with open(path) as f:
                old = json.load(f)
            if old != json.loads(json.dumps(description)):
                changed = sorted(k for k in set(old) | set(description)
                                 if old.get(k) != json.loads(json.dumps(
                                     description.get(k))))
                raise UsageError(
                    f'{out_dir!r} holds the outputs of another run '
                    f'({", ".join(changed)} differ): give another output '
                    f'folder, or {opt("force")} to redo everything there')
            if osp.isfile(osp.join(out_dir, DONE)):
                with open(osp.join(out_dir, DONE)) as f:
                    self.done = {ln.rstrip('\n') for ln in f if ln.strip()}
        elif osp.isdir(out_dir) and not force and [
                f for f in os.listdir(out_dir) if '.tmp-' not in f]:
            raise UsageError(
                f'{out_dir!r} exists and holds files that are not an '
                'inference run\'s: give an empty or new folder, or '
                f'{opt("force")} to write into it')
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_temporaries(out_dir)
        if force:
            for name in (DONE, failures, areas):
                if osp.exists(osp.join(out_dir, name)):
                    os.remove(osp.join(out_dir, name))
        write_atomic(path, json.dumps(description, indent=2).encode())
        self._lock = threading.Lock()

    def finished(self, item: Item) -> None:
        with self._lock:
            with open(osp.join(self.out_dir, DONE), 'a') as f:
                f.write(item.key + '\n')

    def write_failures(self, failures: List[tuple]) -> Optional[str]:
        path = osp.join(self.out_dir, self.failures)
        if not failures:
            if osp.exists(path):
                os.remove(path)
            return None
        write_atomic(path, ''.join(f'{p}\t{why}\n'
                                   for p, why in failures).encode())
        return path


__all__ = ['Outputs', 'Manifest', 'write_atomic', 'overlay', 'MANIFEST',
           'DONE', 'FAILURES', 'AREAS']
