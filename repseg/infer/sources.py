# Copyright (c) repseg contributors. All rights reserved.
"""What the user points inference at, as a list of work items: image
files, folders (``recursive``), glob patterns, text files listing paths,
and videos (every frame, or every N-th). Each item knows the root it came
from, so its outputs keep the path relative to that root."""
import dataclasses
import glob
import os
import os.path as osp
from typing import List, Optional, Sequence

from ..errors import UsageError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp',
                  '.ppm', '.pgm')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                  '.mpeg')
LIST_SUFFIXES = ('.txt', '.lst')


@dataclasses.dataclass(frozen=True)
class Source:
    """One input the user named: an image or video file (``root`` its
    folder) or the files found under a folder or pattern (``root`` that
    folder, or the pattern's fixed part)."""
    path: str
    root: str
    kind: str          # 'image' or 'video'

    @property
    def rel(self) -> str:
        """The path relative to its root, without the suffix."""
        return osp.splitext(osp.relpath(self.path, self.root))[0]


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to segment: a file, or frame ``frame`` of a video."""
    source: Source
    frame: Optional[int] = None

    @property
    def key(self) -> str:
        """Its name in the manifest and the outputs (relative, no suffix):
        ``street/a`` or, for a video's frame, ``drive/000042``."""
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


def _folder(root: str, recursive: bool) -> List[Source]:
    found = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for f in sorted(files):
            kind = _kind(f)
            if kind:
                found.append(Source(osp.join(dirpath, f), root, kind))
        if not recursive:
            break
    return found


def collect(inputs: Sequence[str], recursive: bool = False) -> List[Source]:
    """The sources of every input the user named (each at most once, in a
    stable order): files, folders (their images and videos; ``recursive``
    descends), glob patterns and ``.txt`` / ``.lst`` files listing one path
    per line. Several roots get a subfolder each in the outputs
    (:func:`with_root_names`)."""
    out: List[Source] = []
    for name in inputs:
        if osp.isdir(name):
            out += _folder(name, recursive)
        elif osp.isfile(name) and name.lower().endswith(LIST_SUFFIXES):
            base = osp.dirname(osp.abspath(name))
            with open(name) as f:
                listed = [ln.strip() for ln in f
                          if ln.strip() and not ln.startswith('#')]
            for p in listed:
                p = p if osp.isabs(p) else osp.join(base, p)
                out.append(Source(p, osp.dirname(p), _kind(p) or 'image'))
        elif osp.isfile(name):
            out.append(Source(name, osp.dirname(name) or '.',
                              _kind(name) or 'image'))
        elif glob.has_magic(name):
            matches = sorted(glob.glob(name, recursive=True))
            root = _fixed_part(name)
            out += [Source(p, root, _kind(p) or 'image') for p in matches
                    if osp.isfile(p) and _kind(p)]
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


def with_root_names(sources: List[Source]) -> List[Source]:
    """When the sources come from several roots, each root's outputs go to
    a subfolder named after it (the root's own name, made unique)."""
    roots = list(dict.fromkeys(s.root for s in sources))
    if len(roots) < 2:
        return sources
    names, used = {}, set()
    for r in roots:
        base = osp.basename(osp.normpath(osp.abspath(r))) or 'root'
        name, k = base, 1
        while name in used:
            k += 1
            name = f'{base}_{k}'
        used.add(name)
        names[r] = name
    return [_Rooted(s.path, s.root, s.kind, names[s.root]) for s in sources]


@dataclasses.dataclass(frozen=True)
class _Rooted(Source):
    prefix: str = ''

    @property
    def rel(self) -> str:
        return osp.join(self.prefix, Source.rel.fget(self))


__all__ = ['Source', 'Item', 'collect', 'with_root_names',
           'IMAGE_SUFFIXES', 'VIDEO_SUFFIXES']
