# Copyright (c) repseg contributors. All rights reserved.
"""The one run driver of an inference job, whatever segments it.

The driver plans the job (:func:`plan`), decides what an earlier run
finished (the manifest), cuts the rest into :class:`Unit` s (image files
in input order; a video's frames, whole or in ranges of about equal
frames, each read from the video's start) and hands them to an executor;
it counts what comes back (done, skipped, failed), draws the progress bar,
lists each finished image in ``done.txt`` and writes ``areas.csv``,
``failures.txt`` and the overlay videos, each once, in the inputs' order.

An executor segments units and yields one :class:`~.job.Result` per
image: :class:`~.engine.ThreadExecutor` in this process (several images
in flight on threads), :class:`~.distributed.RayExecutor` on Ray Data
actors (each running a ``ThreadExecutor`` of its own). It has

- ``workers``: how many processes segment at once, and ``remote``:
  whether units travel to other processes (units are cut for them:
  :func:`unit_sizes`);
- ``results(units)``: the results of every unit's images (a unit's in
  its order), raising :class:`Stalled` when an image makes no progress
  within the :class:`Watch`'s limit (the driver ends the run with one
  :class:`~repseg.errors.StalledError` line);
- ``busy_seconds`` and ``startup_seconds`` (None where not measured),
  read when the results end.
"""
import collections
import dataclasses
import math
import os.path as osp
import sys
import threading
import time
from typing import (Callable, Dict, FrozenSet, Iterator, List, Optional,
                    Tuple)

from ..deploy.runtimes import RunInfo, runtime_label
from ..errors import StalledError, UsageError, opt
from .job import InferSettings, Network, Result, Summary
from .outputs import Manifest, Outputs
from .sources import (Item, Source, collect, open_video, unique_keys,
                      unsearched_subfolders, with_root_names)

#: a unit of images sent to a worker of several: at least / at most this
#: many images (a lost worker redoes at most ``MAX_UNIT``)
MIN_UNIT, MAX_UNIT = 8, 64
#: units per worker a job is cut into (the last ones even out the workers)
UNITS_PER_WORKER = 4
#: ranges per worker a video longer than a worker's share is cut into (a
#: worker that starts late takes fewer; each range is read from the
#: video's start, so more would decode the start again and again)
RANGES_PER_WORKER = 2


def _shard(sources: List[Source], shard: Optional[tuple]) -> List[Source]:
    """The K-th of every N sources in a stable sorted order."""
    if not shard or not sources:
        return sources
    k, n = shard
    ordered = sorted(sources, key=lambda s: osp.abspath(s.path))
    mine = ordered[k - 1::n]
    if not mine:
        raise UsageError(f'shard {k}/{n} has no inputs: the job holds '
                         f'{len(ordered)}; run at most {len(ordered)} '
                         'shards')
    return mine


def _nothing_found(inputs, recursive: bool) -> UsageError:
    below = sum(unsearched_subfolders(inputs).values()) \
        if not recursive else 0
    folders = not recursive and any(osp.isdir(i) for i in inputs)
    return UsageError(
        'the inputs hold no image or video (looked for ' + ', '.join(inputs)
        + (': folders are searched recursively only with ' + opt('recursive')
           if folders else '')
        + (f'; {below} subfolder(s) hold some' if below else '') + ')')


def video_length(source: Source, every: int) -> int:
    """The frames of a video a run segments (its every ``every``-th, as
    counted by its container; a UsageError if it cannot be opened)."""
    cap, n, _ = open_video(source.path)
    cap.release()
    return -(-n // every)


def plan(inputs, settings: InferSettings) -> tuple:
    """The sources and the number of images (videos opened to count their
    frames; one that cannot be opened is a UsageError). Every source's
    name in the outputs is decided from the whole job's list, before a
    shard takes its share (:func:`~.sources.unique_keys`)."""
    sources = unique_keys(with_root_names(collect(inputs,
                                                  settings.recursive)))
    sources = _shard(sources, settings.shard_of)
    if not sources:
        raise _nothing_found(inputs, settings.recursive)
    total = sum(1 if s.kind == 'image' else video_length(s, settings.every)
                for s in sources)
    return sources, total


@dataclasses.dataclass(frozen=True)
class Unit:
    """A share of a job that one process segments in order: image files,
    or one video's every N-th frame from ``start`` to ``stop`` (frame
    indices; ``stop`` exclusive, None: the video's end), read from the
    video's start; ``done``: the video's frames an earlier run finished
    (reported skipped, not segmented)."""
    sources: Tuple[Source, ...]
    start: int = 0
    stop: Optional[int] = None
    done: FrozenSet[int] = frozenset()

    @property
    def video(self) -> Optional[Source]:
        first = self.sources[0]
        return first if first.kind == 'video' else None


@dataclasses.dataclass
class Job:
    """One inference job: its sources (:func:`plan`), ``total`` images,
    the output folder, the settings, the network (``identity``, ``recipe``
    and ``info`` are what the driver reads: a network described, not
    loaded, will do) and the summary the driver fills."""
    sources: List[Source]
    total: int
    out_dir: str
    settings: InferSettings
    net: Network
    summary: Summary = dataclasses.field(default_factory=Summary)


def frame_ranges(frames: int, every: int, parts: int) -> List[tuple]:
    """(start, stop) frame indices cutting a video of ``frames`` frames to
    segment into ``parts`` ranges of about equal frames (the last one runs
    to the video's end: None)."""
    parts = max(1, min(parts, frames))
    cuts = [every * (j * frames // parts) for j in range(parts)]
    return list(zip(cuts, cuts[1:] + [None]))


def unit_sizes(total: int, workers: int,
               remote: bool = True) -> Tuple[int, Optional[int]]:
    """(images per unit, frames per video range or None: whole videos) of
    a job of ``total`` images for ``workers`` processes: in this process
    (not ``remote``), images one by one and videos whole; sent to other
    processes, units of about ``total / (workers x UNITS_PER_WORKER)``
    images (within ``MIN_UNIT`` and ``MAX_UNIT``: few messages, and the
    last units even out the workers) and, with several workers, videos in
    ranges of at most ``total / (workers x RANGES_PER_WORKER)`` frames (a
    longer video is read by several workers, each range from the video's
    start)."""
    if not remote:
        return 1, None
    per_unit = math.ceil(total / (workers * UNITS_PER_WORKER))
    per_range = max(1, math.ceil(total / (workers * RANGES_PER_WORKER)))
    return (min(MAX_UNIT, max(MIN_UNIT, per_unit)),
            per_range if workers > 1 else None)


class Stalled(Exception):
    """An image has made no progress within the watch's limit: its name,
    for how long, the limit and the network's :class:`RunInfo` (picklable:
    a Ray actor sends it to the driver)."""

    def __init__(self, item: str, seconds: float, limit: float,
                 info: RunInfo):
        super().__init__(item, seconds, limit, info)
        self.item, self.seconds, self.limit, self.info = (item, seconds,
                                                          limit, info)

    def error(self, done: int) -> StalledError:
        """The run's one error line (``done`` images finished)."""
        info = self.info
        return StalledError(
            f'{self.item} did not finish in {self.seconds:.0f} s '
            f'({runtime_label(info.runtime)}, {info.precision}, '
            f'{info.mode} mode, {osp.basename(info.file) or "model"}): the '
            f'run stopped there; the {done} image(s) finished stay finished '
            'and a rerun resumes. If the image is only slow, raise '
            f'{opt("stall_timeout", int(2 * self.limit))}')


class Watch:
    """The images in flight, each since when, and how long the slowest
    finished one took: a run whose oldest image in flight has not finished
    within :meth:`limit` is stalled (:meth:`stalled`)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.lock = threading.Lock()
        self.running: Dict[int, tuple] = {}
        self.slowest = 0.0

    def call(self, work: Callable, item, *args):
        """``work(item, *args)``, timed and known to be in flight."""
        since = time.perf_counter()
        with self.lock:
            self.running[id(item)] = (item, since)
        try:
            return work(item, *args)
        finally:
            took = time.perf_counter() - since
            with self.lock:
                del self.running[id(item)]
                self.slowest = max(self.slowest, took)

    def limit(self) -> float:
        """max(the timeout, 20x the slowest image so far)."""
        return max(self.timeout, 20 * self.slowest)

    def stalled(self) -> Optional[tuple]:
        """(item, seconds) of the oldest image in flight when it has been
        running longer than :meth:`limit`, else None."""
        now = time.perf_counter()
        with self.lock:
            oldest = min(self.running.values(), key=lambda r: r[1],
                         default=None)
        if oldest is not None and now - oldest[1] > self.limit():
            return oldest[0], now - oldest[1]
        return None


class Progress:
    """A progress bar with images/s and ETA (rich), or nothing."""

    def __init__(self, total: int, quiet: bool):
        self.bar = None
        if quiet:
            return
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn,
                                       Progress, TextColumn,
                                       TimeRemainingColumn)
        except ImportError:
            return
        self.bar = Progress(
            TextColumn('segmenting'), BarColumn(), MofNCompleteColumn(),
            TextColumn('{task.fields[rate]}'), TimeRemainingColumn(),
            transient=False, console=Console(file=sys.stderr))
        self.task = self.bar.add_task('images', total=total, rate='')
        self.start = time.perf_counter()
        self.count = 0
        self.bar.start()

    def advance(self):
        if self.bar is None:
            return
        self.count += 1
        rate = self.count / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=1, rate=f'{rate:.2f} img/s')

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def skipped(item: Item, outputs: Outputs) -> Result:
    """The result of an image an earlier run finished."""
    return Result(str(item), item.key, 'skipped', files=outputs.paths(item))


class Ledger:
    """The driver's books of one job, kept in this process alone: the
    outputs' manifest (what is done), the counts, the progress bar, the
    failures, the areas rows and each video's overlay frames."""

    def __init__(self, job: Job):
        s, r = job.settings, job.net.recipe
        self.job, self.summary = job, job.summary
        shard = s.shard_of
        # one writer per file: a shard has its own failures and areas
        tag = f'.shard-{shard[0]}-of-{shard[1]}' if shard else ''
        self.outputs = Outputs(job.out_dir, r.classes, r.palette, s.overlay,
                               s.opacity, s.label_ids, s.areas,
                               areas_file=f'areas{tag}.csv')
        self.manifest = Manifest(
            job.out_dir, dict(model=job.net.identity, options=s.outputs()),
            s.force, failures=f'failures{tag}.txt', areas=f'areas{tag}.csv',
            shard=bool(shard))
        self.outputs.load_areas()   # the rows of an earlier run (resumed)
        self.index = {src.rel: i for i, src in enumerate(job.sources)}
        #: results decided here (images done before), not yet yielded
        self.ready: collections.deque = collections.deque()
        #: every counted image's key -> (source index, frame or -1)
        self.places: Dict[str, tuple] = {}
        self.failures: List[tuple] = []
        self.frames: Dict[int, List[tuple]] = collections.defaultdict(list)
        self.progress = Progress(job.total, s.quiet)

    def is_done(self, item: Item) -> bool:
        """Whether an earlier run finished ``item`` (listed done, its files
        there and, with areas, its row)."""
        return item.key in self.manifest.done and all(
            osp.exists(p) for p in self.outputs.paths(item).values()) and (
                not self.job.settings.areas
                or self.outputs.has_areas(item.key))

    def done_frames(self, source: Source) -> FrozenSet[int]:
        """The frames of a video an earlier run finished."""
        head = source.rel + '/'
        frames = (k[len(head):] for k in self.manifest.done
                  if k.startswith(head))
        return frozenset(int(f) for f in frames if f.isdigit()
                         and self.is_done(Item(source, int(f))))

    def units(self, per_unit: int,
              per_range: Optional[int]) -> Iterator[Unit]:
        """The job's units in input order: images not done before, at most
        ``per_unit`` at a time (those done before go to :attr:`ready`),
        videos in ranges of at most ``per_range`` frames (None: whole)."""
        pending: List[Source] = []
        every = self.job.settings.every
        for source in self.job.sources:
            if source.kind == 'image':
                item = Item(source)
                if self.is_done(item):
                    self.ready.append(skipped(item, self.outputs))
                    continue
                pending.append(source)
                if len(pending) >= per_unit:
                    yield Unit(tuple(pending))
                    pending = []
                continue
            if pending:
                yield Unit(tuple(pending))
                pending = []
            done = self.done_frames(source)
            if per_range is None:
                yield Unit((source, ), done=done)
                continue
            frames = video_length(source, every)
            for start, stop in frame_ranges(frames, every,
                                            -(-frames // per_range)):
                yield Unit((source, ), start, stop, done)
        if pending:
            yield Unit(tuple(pending))

    def place(self, key: str) -> tuple:
        """(source index, frame or -1) of a result's key."""
        if key in self.index:
            return self.index[key], -1
        head, _, frame = key.rpartition('/')
        return self.index[head], int(frame)

    def count(self, res: Result) -> Result:
        """Record one result: its count, its line in ``done.txt``, its
        areas row, its failure or its overlay frame."""
        s = self.summary
        place = self.places[res.key] = self.place(res.key)
        if res.status == 'failed':
            s.failed += 1
            self.failures.append((place, res.input, res.reason))
        elif res.status == 'skipped':
            s.skipped += 1
        else:
            s.done += 1
            s.fits[res.fit] = s.fits.get(res.fit, 0) + 1
            if res.exact_size:
                size = '{}x{}'.format(*res.exact_size)
                s.exact_sizes[size] = s.exact_sizes.get(size, 0) + 1
            if res.shares is not None:
                self.outputs.add_areas(res.key, res.shares)
            self.manifest.finished(res.key)
        if 'overlay' in res.files and place[1] >= 0:
            self.frames[place[0]].append((place[1], res.files['overlay']))
        self.progress.advance()
        return res

    def drain(self) -> Iterator[Result]:
        while self.ready:
            yield self.count(self.ready.popleft())

    def finish(self) -> None:
        """The overlay videos, ``areas.csv`` and ``failures.txt``, in the
        inputs' order."""
        s = self.summary
        for i in sorted(self.frames):
            made = [f for _, f in sorted(self.frames[i]) if osp.exists(f)]
            if made:
                source = self.job.sources[i]
                cap, _, fps = open_video(source.path)
                cap.release()
                s.videos.append(self.outputs.video(
                    source.rel, made, fps / self.job.settings.every))
        order = sorted(self.places, key=self.places.get)
        self.outputs.finish_areas(order)
        s.failures_file = self.manifest.write_failures(
            [f[1:] for f in sorted(self.failures)])


def drive(job: Job, executor) -> Iterator[Result]:
    """Run ``job`` with ``executor``: one :class:`~.job.Result` per image
    as the executor finishes them (in input order from a
    :class:`~.engine.ThreadExecutor`; images an earlier run finished come
    as soon as they are known), ``job.summary`` filled as it goes
    (complete when the iterator is exhausted). An image that makes no
    progress ends the run with a :class:`~repseg.errors.StalledError`
    naming it and the runtime; what was finished stays finished."""
    ledger = Ledger(job)
    results = executor.results(ledger.units(*unit_sizes(
        job.total, executor.workers, executor.remote)))
    start = time.perf_counter()
    try:
        for res in results:
            yield from ledger.drain()
            yield ledger.count(res)
        yield from ledger.drain()
    except Stalled as stuck:
        raise stuck.error(job.summary.done) from None
    finally:
        # a stalled or interrupted run does not wait for its threads (one
        # may never return); images in flight are not counted as done
        results.close()
        ledger.progress.close()
        job.summary.seconds = time.perf_counter() - start
        job.summary.busy_seconds = executor.busy_seconds
        job.summary.startup_seconds = executor.startup_seconds
    ledger.finish()


__all__ = ['Job', 'Unit', 'Watch', 'Stalled', 'Ledger', 'Progress', 'drive',
           'plan', 'frame_ranges', 'unit_sizes', 'video_length', 'skipped']
