# Copyright (c) repseg contributors. All rights reserved.
"""What the user points inference at, as a list of work items: image
files, folders (``recursive``), glob patterns, text files listing paths,
and videos (every frame, or every N-th). Each item knows the root it came
from, so its outputs keep the path relative to that root; the names of a
whole job's inputs are made unique once (:func:`unique_keys`), before
the job is split into shards or Ray tasks. Reading them: images
(:func:`read_image`) and a video's frames, always from its start
(:func:`video_frames`: no seeking, so every process that reads a frame
decodes the same pixels)."""
import collections
import dataclasses
import glob
import json
import os
import os.path as osp
import unicodedata
from typing import Container, Dict, Iterator, List, Optional, Sequence, \
    Tuple

import numpy as np

from ..errors import UsageError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp',
                  '.ppm', '.pgm')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                  '.mpeg')
LIST_SUFFIXES = ('.txt', '.lst')
#: the file that makes a folder an inference run's output folder
RUN_MANIFEST = 'manifest.json'


@dataclasses.dataclass(frozen=True)
class Source:
    """One input the user named: an image or video file (``root`` its
    folder) or the files found under a folder or pattern (``root`` that
    folder, or the pattern's fixed part); ``name``: its name in the outputs
    when :func:`with_root_names` or :func:`unique_keys` gave it one."""
    path: str
    root: str
    kind: str          # 'image' or 'video'
    name: str = ''

    @property
    def stem(self) -> str:
        """The path relative to its root, without the suffix."""
        return osp.splitext(osp.relpath(self.path, self.root))[0]

    @property
    def rel(self) -> str:
        """Its name in the outputs (:attr:`Item.key` of an image, the
        folder of a video's frames)."""
        return self.name or self.stem


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to segment: a file, or frame ``frame`` of a video."""
    source: Source
    frame: Optional[int] = None

    @property
    def key(self) -> str:
        """Its name in the manifest and the outputs (``labels/KEY.png``,
        ``overlays/KEY.png``, ``done.txt``, ``areas.csv``): the input's
        path relative to its root without the suffix (``street/a``), or
        for a video's frame ``drive/000042``; with several roots, each
        root's name first (:func:`with_root_names`).

        Every input of a job has its own key, decided from the whole job's
        input list (so shards and Ray workers, which split that list,
        agree), ignoring case (and Unicode normalization: ``Y.png`` and
        ``y.png`` would be one file on a case-insensitive disk):

        1. inputs whose keys are the same ignoring case each keep their
           extension in the key (``y.jpg`` and ``y.png`` give
           ``labels/y.jpg.png`` and ``labels/y.png.png``; a lone ``y.jpg``
           stays ``labels/y.png``); so does a video whose key is a folder
           of other inputs' keys (``drive.mp4`` next to a folder
           ``drive/``: ``labels/drive.mp4/000000.png``); repeated until no
           new clash appears;
        2. inputs whose keys still clash ignoring case (``Y.png`` and
           ``y.png`` on a case-sensitive disk) are numbered in the sorted
           order of their paths: the first keeps its key, the others get
           ``~2``, ``~3``, ... (``y.png~2``).
        """
        rel = self.source.rel
        return rel if self.frame is None else f'{rel}/{self.frame:06d}'

    def __str__(self) -> str:
        p = self.source.path
        return p if self.frame is None else f'{p} (frame {self.frame})'


def _kind(path: str) -> Optional[str]:
    low = path.lower()
    if low.endswith(IMAGE_SUFFIXES):
        return 'image'
    if low.endswith(VIDEO_SUFFIXES):
        return 'video'
    return None


def read_run_manifest(folder: str) -> Optional[dict]:
    """The manifest of an inference run's output folder, or None when
    ``folder`` holds none (or a ``manifest.json`` that is not a run's)."""
    try:
        with open(osp.join(folder, RUN_MANIFEST)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and {'model', 'options'} <= set(data) \
            and isinstance(data['options'], dict):
        return data
    return None


def _subfolders(dirpath: str, dirnames: List[str]) -> List[str]:
    """The subfolders to descend into: sorted, without the outputs of
    inference runs (an output folder inside an input folder, or the
    ``labels/`` and ``overlays/`` of an input folder that is also the
    output folder, are not segmented by the next run)."""
    mine = ('labels', 'overlays') if read_run_manifest(dirpath) else ()
    return [d for d in sorted(dirnames) if d not in mine
            and read_run_manifest(osp.join(dirpath, d)) is None]


def _folder(root: str, recursive: bool) -> List[Source]:
    found = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = _subfolders(dirpath, dirnames)
        for f in sorted(files):
            kind = _kind(f)
            if kind:
                found.append(Source(osp.join(dirpath, f), root, kind))
        if not recursive:
            break
    return found


def _has_media(folder: str) -> bool:
    for dirpath, dirnames, files in os.walk(folder):
        dirnames[:] = _subfolders(dirpath, dirnames)
        if any(_kind(f) for f in files):
            return True
    return False


def unsearched_subfolders(inputs: Sequence[str]) -> Dict[str, int]:
    """``{folder: n}``: of the folders in ``inputs``, how many of each
    one's subfolders hold images or videos (that a run without
    ``recursive`` does not search)."""
    out = {}
    for name in inputs:
        if osp.isdir(name):
            try:
                subs = _subfolders(name, [
                    d for d in os.listdir(name)
                    if osp.isdir(osp.join(name, d))])
            except OSError:
                continue
            n = sum(_has_media(osp.join(name, d)) for d in subs)
            if n:
                out[name] = n
    return out


def _listed(name: str, recursive: bool) -> List[Source]:
    """The sources of a ``.txt`` / ``.lst`` list: each line a file, folder
    or glob pattern (relative paths from the list's folder). Folders and
    patterns are taken as on the command line; the listed files share one
    root, their common folder, so that the outputs keep the layout of the
    folders they are in (the layout the folders named themselves give)."""
    base = osp.dirname(osp.abspath(name))
    try:
        with open(name, encoding='utf-8-sig') as f:   # a BOM too
            lines = [ln.strip() for ln in f]
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f'the list {name!r} cannot be read ({e}): give a '
                         'text file with one path per line') from None
    listed = [p if osp.isabs(p) else osp.join(base, p)
              for p in lines if p and not p.startswith('#')]
    out, files = [], []
    for p in listed:
        if osp.isdir(p):
            out += _folder(p, recursive)
        elif glob.has_magic(p) and not osp.exists(p):
            out += _glob(p)
        else:
            files.append(p)
    if files and not any(osp.exists(p) for p in files) and not out:
        raise UsageError(
            f'none of the {len(files)} paths listed in {name!r} exists '
            f'(the first: {files[0]!r}); relative paths are read from the '
            "list's own folder: give paths from there, or absolute ones")
    if files:
        root = osp.commonpath([osp.dirname(p) for p in files])
        out += [Source(p, root, _kind(p) or 'image') for p in files]
    return out


def _glob(pattern: str) -> List[Source]:
    matches = sorted(glob.glob(pattern, recursive=True))
    root = _fixed_part(pattern)
    return [Source(p, root, _kind(p)) for p in matches
            if osp.isfile(p) and _kind(p)]


def collect(inputs: Sequence[str], recursive: bool = False) -> List[Source]:
    """The sources of every input the user named (each at most once, in a
    stable order): files, folders (their images and videos; ``recursive``
    descends, never into an inference run's output folder), glob patterns
    and ``.txt`` / ``.lst`` files listing one file, folder or pattern per
    line. Their names in the outputs: :func:`with_root_names`, then
    :func:`unique_keys`."""
    out: List[Source] = []
    for name in inputs:
        if osp.isdir(name):
            out += _folder(name, recursive)
        elif osp.isfile(name) and name.lower().endswith(LIST_SUFFIXES):
            out += _listed(name, recursive)
        elif osp.isfile(name):
            out.append(Source(name, osp.dirname(name) or '.',
                              _kind(name) or 'image'))
        elif glob.has_magic(name):
            out += _glob(name)
        else:
            raise UsageError(f'input {name!r} does not exist: name image or '
                             'video files, folders, glob patterns or a .txt '
                             'file listing paths')
    seen, unique = set(), []
    for s in out:
        key = osp.abspath(s.path)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def _fixed_part(pattern: str) -> str:
    parts = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or '.'


def _fold(key: str) -> str:
    """A key as a case-insensitive disk compares names."""
    return unicodedata.normalize('NFC', key).casefold()


def with_root_names(sources: List[Source]) -> List[Source]:
    """When the sources come from several roots, each root's outputs go to
    a subfolder named after it (the root's own name, made unique ignoring
    case: ``day1``, ``day1_2``)."""
    roots = list(dict.fromkeys(s.root for s in sources))
    if len(roots) < 2:
        return sources
    names, used = {}, set()
    for r in roots:
        base = osp.basename(osp.normpath(osp.abspath(r))) or 'root'
        name, k = base, 1
        while _fold(name) in used:
            k += 1
            name = f'{base}_{k}'
        used.add(_fold(name))
        names[r] = name
    return [dataclasses.replace(s, name=osp.join(names[s.root], s.stem))
            for s in sources]


def _ancestors(key: str):
    parts = key.split('/')
    return ('/'.join(parts[:i]) for i in range(1, len(parts)))


def unique_keys(sources: List[Source]) -> List[Source]:
    """Every source of one job (named by :func:`with_root_names`) with its
    own name in the outputs: the rule of :attr:`Item.key`. Give it the
    whole job's list: shards and Ray split the result."""
    keys = [s.rel.replace(os.sep, '/') for s in sources]
    extended = [False] * len(sources)
    while True:   # 1. a clash: the inputs keep their extensions
        groups = collections.defaultdict(list)
        for i, k in enumerate(keys):
            groups[_fold(k)].append(i)
        videos = {_fold(k): i for i, (s, k) in enumerate(zip(sources, keys))
                  if s.kind == 'video'}
        clash = {i for g in groups.values() if len(g) > 1 for i in g}
        clash |= {videos[a] for k in keys for a in _ancestors(_fold(k))
                  if a in videos}
        grow = [i for i in sorted(clash) if not extended[i]]
        if not grow:
            break
        for i in grow:
            keys[i] += osp.splitext(sources[i].path)[1]
            extended[i] = True
    # 2. still the same ignoring case: ~2, ~3 in the sorted order of paths
    used = {_fold(k) for k in keys}
    seen = set()
    for i in sorted(range(len(keys)),
                    key=lambda i: osp.abspath(sources[i].path)):
        k = _fold(keys[i])
        if k in seen:
            n = 2
            while _fold(f'{keys[i]}~{n}') in used:
                n += 1
            keys[i] = f'{keys[i]}~{n}'
            used.add(_fold(keys[i]))
            k = _fold(keys[i])
        seen.add(k)
    return [s if k == s.stem.replace(os.sep, '/') and not s.name
            else dataclasses.replace(s, name=k)
            for s, k in zip(sources, keys)]


def quiet_opencv() -> None:
    """OpenCV's own warnings about a broken file (its decoders print to
    standard error) would interleave with repseg's one line per failure."""
    try:
        from cv2.utils import logging as cv_logging
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):   # older OpenCV builds
        pass


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 image, or OSError saying why it cannot be read."""
    import cv2
    if not osp.isfile(path):
        raise OSError('no such file')
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise OSError('empty file')
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError('not an image OpenCV can decode (corrupt or of an '
                      'unknown format)')
    return img


def open_video(path: str):
    """An opened ``cv2.VideoCapture``, its frame count and fps, or a
    UsageError."""
    import cv2
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise UsageError(f'video {path!r} cannot be opened (OpenCV has no '
                         'decoder for it, or it is not a video)')
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    return cap, n, fps


def video_frames(path: str, every: int, start: int = 0,
                 stop: Optional[int] = None, done: Container[int] = ()
                 ) -> Iterator[Tuple[int, Optional[np.ndarray]]]:
    """(frame index, image) of a video's every ``every``-th frame from
    ``start`` to ``stop`` (exclusive; None: its end), read from the
    video's start (frames before ``start`` are grabbed, not converted:
    never a seek, which may land elsewhere than reading does); a frame in
    ``done`` comes with None instead of its image (not converted)."""
    cap, _, _ = open_video(path)
    try:
        index = 0
        while stop is None or index < stop:
            if not cap.grab():
                break
            if index >= start and index % every == 0:
                if index in done:
                    yield index, None
                else:
                    ok, img = cap.retrieve()
                    if ok:
                        yield index, img
            index += 1
    finally:
        cap.release()


__all__ = ['Source', 'Item', 'collect', 'with_root_names', 'unique_keys',
           'unsearched_subfolders', 'read_run_manifest', 'read_image',
           'open_video', 'video_frames', 'quiet_opencv', 'IMAGE_SUFFIXES',
           'VIDEO_SUFFIXES']
