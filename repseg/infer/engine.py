# Copyright (c) repseg contributors. All rights reserved.
"""The inference run: images read, preprocessed, segmented and written on
worker threads, several at a time, so that the network never waits for
disk or decoding (``pipeline``), with at most as many network calls in
flight as the model has requests; a progress bar with images/s and ETA;
unreadable images reported and skipped; a rerun resumes from the output
folder's manifest. Torch-free: the network is any numpy callable with a
:class:`~repseg.deploy.runtimes.RunInfo` (:class:`Network`)."""
import collections
import dataclasses
import os
import os.path as osp
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..deploy.runtimes import RunInfo, runtime_label
from ..errors import StalledError, UsageError, opt
from ..settings import Settings
from .outputs import Manifest, Outputs
from .predict import EXACT, segment
from .recipe import Recipe, exact_size
from .sources import Item, Source, collect, with_root_names


@dataclasses.dataclass
class InferSettings(Settings):
    """How to segment (one field per option of tools/infer.py).

    Args:
        recursive (bool): folders are searched recursively.
        every (int): a video's every N-th frame.
        label_ids (bool): label maps in Cityscapes label ids.
        overlay (bool), opacity (float): overlays (and overlay videos).
        areas (bool): class pixel shares per image in ``areas.csv``.
        mode (str): 'latency' (one request with every thread), 'throughput'
            (several requests in flight) or 'auto' (throughput for more
            than one image).
        threads (int or None): threads in all (streams x threads per
            stream); None: every CPU this process may use.
        cache_dir (str or None): OpenVINO's cache of compiled models.
        device (str): PyTorch models: the device ('cpu', 'cuda:0').
        batch_size (int or None): PyTorch models: images of one size run
            this many at a time (:class:`~repseg.infer.batching.Batcher`);
            None: 4 in throughput mode, 1 in latency mode.
        pipeline (bool): read, preprocess and write on worker threads
            while the network runs (False: one image after the other).
        quiet (bool): no progress bar.
        force (bool): write into an output folder of another run, whose
            outputs are removed first (everything is redone); into a folder
            that is not a run's only beside its files, never over one.
        keep_labels (bool): results carry their label arrays.
        shard (str or None): 'K/N': this process takes the K-th of every N
            inputs in a stable sorted order (N processes, e.g. a Slurm job
            array or N machines on a shared filesystem, split one job into
            one output folder; each resumes through its manifest).
        ray (bool): run on a Ray cluster (:mod:`repseg.infer.distributed`;
            ``threads`` is then each actor's CPUs).
        ray_address (str or None): the cluster to join ('HOST:PORT', or
            'auto'); None with ``ray``: a local cluster.
        stall_timeout (float): seconds an image may go without finishing
            (read, segmented, written) before the run ends with one error
            line naming it and the runtime
            (:class:`~repseg.errors.StalledError`); the limit is 20x the
            slowest image so far when that is longer. What was finished
            stays finished (a rerun resumes).
    """
    recursive: bool = False
    every: int = 1
    label_ids: bool = False
    overlay: bool = False
    opacity: float = 0.5
    areas: bool = False
    mode: str = 'auto'
    threads: Optional[int] = None
    cache_dir: Optional[str] = None
    device: str = 'cpu'
    batch_size: Optional[int] = None
    pipeline: bool = True
    quiet: bool = False
    force: bool = False
    keep_labels: bool = False
    shard: Optional[str] = None
    ray: bool = False
    ray_address: Optional[str] = None
    stall_timeout: float = 120.0

    @property
    def shard_of(self) -> Optional[tuple]:
        """(K, N) of ``shard`` 'K/N', or None."""
        if not self.shard:
            return None
        k, _, n = str(self.shard).partition('/')
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise UsageError(f'{opt("shard", self.shard)} is not K/N with '
                             '1 <= K <= N (e.g. 2/4: the second of four '
                             'shares)')
        return int(k), int(n)

    def check(self) -> None:
        if self.every < 1:
            raise UsageError(f'{opt("every", self.every)}: give 1 (every '
                             'frame) or more')
        if not 0 <= self.opacity <= 1:
            raise UsageError(f'{opt("opacity", self.opacity)}: give a value '
                             'from 0 to 1')
        if self.mode not in ('auto', 'latency', 'throughput'):
            raise UsageError(f'{opt("mode", self.mode)} is not a mode: '
                             "choose 'latency', 'throughput' or 'auto'")
        self.shard_of   # noqa: B018  (checks it)
        if self.threads is not None and self.threads < 1:
            raise UsageError(f'{opt("threads", self.threads)}: give 1 or '
                             'more')
        if not self.stall_timeout > 0:
            raise UsageError(f'{opt("stall_timeout", self.stall_timeout)}: '
                             'give a number of seconds above 0')
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f'{opt("batch_size", self.batch_size)}: give 1 '
                             'or more')

    def run_mode(self, images: int) -> str:
        """'latency' or 'throughput' for a run of ``images`` images."""
        if self.mode != 'auto':
            return self.mode
        return 'throughput' if images > 1 else 'latency'

    def outputs(self) -> dict:
        """The options that decide what is written (the manifest's)."""
        return dict(every=self.every, label_ids=self.label_ids,
                    overlay=self.overlay, opacity=self.opacity,
                    areas=self.areas)


def file_identity(path: str, **extra) -> dict:
    """What the manifest records of a model file: its path, size and
    modification time (another file in its place is another model)."""
    st = os.stat(path)
    return dict(file=osp.abspath(path), bytes=st.st_size,
                mtime=int(st.st_mtime), **extra)


@dataclasses.dataclass
class Network:
    """A segmentation network ready for :func:`segment`: ``run`` maps a
    normalized ``(1, 3, H, W)`` array to logits, ``info`` says what runs,
    ``recipe`` how images go in and out, ``identity`` what the manifest
    records of it; ``labels`` (optional) maps it to the class map
    ``(1, H, W)`` computed by the runtime, used where the logits need no
    further work (a whole image at the network's own size)."""
    run: Callable[[np.ndarray], np.ndarray]
    info: RunInfo
    recipe: Recipe
    identity: dict
    labels: Optional[Callable[[np.ndarray], np.ndarray]] = None

    def close(self) -> None:
        """Release what the calls hold (e.g. the batching threads of the
        PyTorch path); the network is not used afterwards."""
        for call in (self.run, self.labels):
            close = getattr(call, 'close', None)
            if close is not None:
                close()


@dataclasses.dataclass
class Result:
    """One image's outcome: ``status`` 'done', 'skipped' (done by an
    earlier run) or 'failed' (``reason``); ``files`` written; ``labels``
    (with ``keep_labels``); ``fit``: how the input met a fixed-size model
    file ('exact', or 'resized' to its size); ``exact_size``: of a resized
    one, the (H, W) a fixed-size file must take to run it exactly."""
    input: str
    key: str
    status: str
    files: Dict[str, str] = dataclasses.field(default_factory=dict)
    reason: str = ''
    labels: Optional[np.ndarray] = None
    fit: str = EXACT
    exact_size: Optional[Tuple[int, int]] = None


@dataclasses.dataclass
class Summary:
    """The run's counts and speed."""
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    #: None where it is not measured (a Ray run: the workers compute)
    busy_seconds: Optional[float] = 0.0
    fits: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: 'HxW' -> how many resized images that size runs exactly
    exact_sizes: Dict[str, int] = dataclasses.field(default_factory=dict)
    failures_file: Optional[str] = None
    videos: List[str] = dataclasses.field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def busy_share(self) -> float:
        """Share of the wall time the network was computing."""
        return min(1.0, self.busy_seconds / self.seconds) \
            if self.seconds and self.busy_seconds else 0.0

    def lines(self) -> List[str]:
        busy = (f', the network busy {100 * self.busy_share:.0f}% of the '
                'time') if self.busy_seconds is not None else ''
        out = [f'{self.done} done, {self.skipped} skipped (done before), '
               f'{self.failed} failed in {self.seconds:.1f} s: '
               f'{self.images_per_s:.2f} images/s end to end{busy}']
        odd = sum(n for k, n in self.fits.items() if k != EXACT)
        if odd:
            sizes = ', '.join(f'{k} ({n})' for k, n in sorted(
                self.exact_sizes.items(), key=lambda kv: -kv[1])[:3])
            more = len(self.exact_sizes) - 3
            sizes += f' and {more} more' if more > 0 else ''
            out.append(
                f'{odd} image(s) did not fit the model file\'s fixed size '
                'and were resized to it, their logits back (close to, not '
                'exactly, what the config computes). To run every size '
                'exactly, export a file that takes any size: tools/export.py '
                'CONFIG CHECKPOINT OUT --dynamic-shape (tools/quantize.py '
                'too); or a fixed file at the size the config\'s test resize '
                f'gives them (--shape H W: {sizes}); or use the config and '
                'checkpoint')
        if self.failures_file:
            out.append(f'failures listed in {self.failures_file}')
        return out


class _Busy:
    """Wall time during which at least one network call ran."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.since = 0.0
        self.total = 0.0

    def __enter__(self):
        with self.lock:
            if self.active == 0:
                self.since = time.perf_counter()
            self.active += 1

    def __exit__(self, *exc):
        with self.lock:
            self.active -= 1
            if self.active == 0:
                self.total += time.perf_counter() - self.since


class _Watch:
    """The images in flight, each since when, and how long the slowest
    finished one took: a run whose oldest image in flight has not finished
    within :meth:`limit` is stalled (:meth:`stalled`)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.lock = threading.Lock()
        self.running: Dict[int, tuple] = {}
        self.slowest = 0.0

    def call(self, work: Callable, item: Item, *args):
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


def _result(future, watch: _Watch, net: 'Network', summary: Summary):
    """The result of ``future``, waited for in short steps; a
    :class:`StalledError` naming the image and the runtime when the run
    makes no progress within the watch's limit."""
    while True:
        try:
            return future.result(timeout=0.5)
        except FuturesTimeout:
            stuck = watch.stalled()
            if stuck is None:
                continue
            item, seconds = stuck
            info = net.info
            raise StalledError(
                f'{item} did not finish in {seconds:.0f} s '
                f'({runtime_label(info.runtime)}, {info.precision}, '
                f'{info.mode} mode, {osp.basename(info.file) or "model"}): '
                'the run stopped there; the '
                f'{summary.done} image(s) finished stay finished and a rerun '
                'resumes. If the image is only slow, raise '
                f'{opt("stall_timeout", int(2 * watch.limit()))}') from None


def _quiet_opencv() -> None:
    """OpenCV's own warnings about a broken file (its decoders print to
    standard error) would interleave with repseg's one line per failure."""
    try:
        from cv2.utils import logging as cv_logging
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):   # older OpenCV builds
        pass


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 image, or OSError saying why it cannot be read."""
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
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise UsageError(f'video {path!r} cannot be opened (OpenCV has no '
                         'decoder for it, or it is not a video)')
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    return cap, n, fps


class _Progress:
    """A progress bar with images/s and ETA (rich), or nothing."""

    def __init__(self, total: int, quiet: bool):
        self.bar = None
        if quiet:
            return
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn,
                                       Progress, TextColumn,
                                       TimeRemainingColumn)
        except ImportError:
            return
        self.bar = Progress(
            TextColumn('segmenting'), BarColumn(), MofNCompleteColumn(),
            TextColumn('{task.fields[rate]}'), TimeRemainingColumn(),
            transient=False, console=_stderr_console())
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


def _stderr_console():
    from rich.console import Console
    return Console(file=sys.stderr)


def _frames(source: Source, every: int):
    """(frame index, image) of a video's every ``every``-th frame."""
    cap, _, _ = open_video(source.path)
    try:
        index = 0
        while True:
            ok = cap.grab()
            if not ok:
                break
            if index % every == 0:
                ok, img = cap.retrieve()
                if ok:
                    yield index, img
            index += 1
    finally:
        cap.release()


def plan(inputs, settings: InferSettings) -> tuple:
    """The sources and the number of images (videos opened to count their
    frames; one that cannot be opened is a UsageError). Every source's
    name in the outputs is decided from the whole job's list, before a
    shard takes its share (:func:`~.sources.unique_keys`)."""
    from .sources import unique_keys, unsearched_subfolders
    sources = unique_keys(with_root_names(collect(inputs,
                                                  settings.recursive)))
    shard = settings.shard_of
    if shard and sources:
        k, n = shard
        ordered = sorted(sources, key=lambda s: osp.abspath(s.path))
        sources = ordered[k - 1::n]
        if not sources:
            raise UsageError(f'shard {k}/{n} has no inputs: the job holds '
                             f'{len(ordered)}; run at most {len(ordered)} '
                             'shards')
    if not sources:
        below = sum(unsearched_subfolders(inputs).values()) \
            if not settings.recursive else 0
        raise UsageError(
            'the inputs hold no image or video (looked for '
            + ', '.join(inputs) + (': folders are searched recursively '
                                   'only with ' + opt('recursive')
                                   if not settings.recursive and any(
                                       osp.isdir(i) for i in inputs) else '')
            + (f'; {below} subfolder(s) hold some' if below else '')
            + ')')
    total = 0
    for s in sources:
        if s.kind == 'video':
            cap, n, _ = open_video(s.path)
            cap.release()
            total += -(-n // settings.every)
        else:
            total += 1
    return sources, total


class _Job:
    """One run's state: the network behind a request semaphore and a busy
    clock, the outputs and the manifest, the counts and failures."""

    def __init__(self, net: Network, out_dir: str, settings: InferSettings,
                 summary: Summary, manifest: bool = True):
        r = net.recipe
        self.net, self.settings, self.summary = net, settings, summary
        shard = settings.shard_of
        # one writer per file: a shard has its own failures and areas
        tag = f'.shard-{shard[0]}-of-{shard[1]}' if shard else ''
        self.outputs = Outputs(out_dir, r.classes, r.palette,
                               settings.overlay, settings.opacity,
                               settings.label_ids, settings.areas,
                               areas_file=f'areas{tag}.csv')
        # a Ray worker writes images only: the driver keeps the manifest
        self.manifest = Manifest(
            out_dir, dict(model=net.identity, options=settings.outputs()),
            settings.force, failures=f'failures{tag}.txt',
            areas=f'areas{tag}.csv', shard=bool(shard)) if manifest else None
        if manifest:   # the rows of an earlier run (resumed)
            self.outputs.load_areas()
        #: with areas, every image's key in input order (the CSV's rows)
        self.order: List[str] = []
        self.busy = _Busy()
        self.calls = threading.BoundedSemaphore(max(1, net.info.requests))
        self.failures: List[tuple] = []

    def network(self, x: np.ndarray) -> np.ndarray:
        with self.calls, self.busy:
            return self.net.run(x)

    def labels(self, x: np.ndarray) -> np.ndarray:
        with self.calls, self.busy:
            return self.net.labels(x)

    def work(self, item: Item, img: Optional[np.ndarray]) -> Result:
        """Read (unless decoded already), segment and write one image."""
        try:
            if img is None:
                img = read_image(item.source.path)
            labels, _, fit = segment(
                img, self.network, self.net.recipe,
                self.labels if self.net.labels is not None else None)
            files = self.outputs.write(item, img, labels)
        except Exception as e:  # noqa: B902  (one image's failure)
            reason = (str(e).strip().splitlines() or [''])[0][:300]
            return Result(str(item), item.key, 'failed',
                          reason=f'{type(e).__name__}: {reason}')
        if self.manifest is not None:
            self.manifest.finished(item)
        return Result(str(item), item.key, 'done', files=files,
                      labels=labels if self.settings.keep_labels else None,
                      fit=fit, exact_size=None if fit == EXACT else
                      exact_size(self.net.recipe, img.shape[1],
                                 img.shape[0]))

    def count(self, res: Result) -> Result:
        s = self.summary
        if res.status == 'failed':
            s.failed += 1
            self.failures.append((res.input, res.reason))
            print(f'failed: {res.input}: {res.reason}', file=sys.stderr)
        else:
            s.done += 1
            s.fits[res.fit] = s.fits.get(res.fit, 0) + 1
            if res.exact_size:
                size = '{}x{}'.format(*res.exact_size)
                s.exact_sizes[size] = s.exact_sizes.get(size, 0) + 1
            shares = self.outputs.take_shares(res.key)
            if shares is not None:   # counted in input order: its row
                self.outputs.add_areas(res.key, shares)
        return res

    def skip(self, item: Item) -> Optional[Result]:
        """The result of an image an earlier run finished (its files and,
        with areas, its row), else None; called for every image in input
        order."""
        if self.settings.areas:
            self.order.append(item.key)
        paths = self.outputs.paths(item)
        if item.key in self.manifest.done and all(
                osp.exists(p) for p in paths.values()) and (
                    not self.settings.areas
                    or self.outputs.has_areas(item.key)):
            self.summary.skipped += 1
            return Result(str(item), item.key, 'skipped', files=paths)
        return None


def _jobs(sources: List[Source], every: int):
    """(item, image or None: read by the worker) of every image."""
    for s in sources:
        if s.kind == 'image':
            yield Item(s), None
        else:
            for f, img in _frames(s, every):
                yield Item(s, f), img


def run(net: Network, sources: List[Source], total: int, out_dir: str,
        settings: InferSettings, summary: Summary) -> Iterator[Result]:
    """Segment every image of ``sources`` with ``net`` into ``out_dir``,
    yielding one :class:`Result` per image in input order (at most twice
    the workers in flight); ``summary`` is filled as it goes (complete when
    the iterator is exhausted)."""
    _quiet_opencv()
    job = _Job(net, out_dir, settings, summary)
    workers = max(1, net.info.requests) + 2 if settings.pipeline else 1
    progress = _Progress(total, settings.quiet)
    videos = collections.OrderedDict()
    watch = _Watch(settings.stall_timeout)
    start = time.perf_counter()
    pool = ThreadPoolExecutor(workers, thread_name_prefix='repseg-infer')
    ended = False
    try:
        window = collections.deque()
        for item, img in _jobs(sources, settings.every):
            if item.source.kind == 'video' and settings.overlay:
                videos.setdefault(item.source, []).append(
                    job.outputs.paths(item)['overlay'])
            done = job.skip(item)
            if done is not None:
                progress.advance()
                yield done
                continue
            window.append(pool.submit(watch.call, job.work, item, img))
            while window and (len(window) > 2 * workers
                              or window[0].done()):
                progress.advance()
                yield job.count(_result(window.popleft(), watch, net,
                                        summary))
        while window:
            progress.advance()
            yield job.count(_result(window.popleft(), watch, net, summary))
        ended = True
    finally:
        # a stalled or interrupted run does not wait for its threads (one
        # may never return); images in flight are not counted as done
        pool.shutdown(wait=ended, cancel_futures=not ended)
        progress.close()
        summary.seconds = time.perf_counter() - start
        summary.busy_seconds = job.busy.total
    for source, frames in videos.items():
        made = [f for f in frames if osp.exists(f)]
        if made:
            cap, _, fps = open_video(source.path)
            cap.release()
            summary.videos.append(job.outputs.video(
                source.rel, made, fps / settings.every))
    job.outputs.finish_areas(job.order)
    summary.failures_file = job.manifest.write_failures(job.failures)


__all__ = ['InferSettings', 'Network', 'Result', 'Summary', 'plan', 'run',
           'file_identity', 'read_image']
