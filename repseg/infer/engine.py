# Copyright (c) repseg contributors. All rights reserved.
"""Segmenting in this process: :class:`ThreadExecutor` reads,
preprocesses, segments and writes images on worker threads, several at a
time, so that the network never waits for disk or decoding
(``pipeline``), with at most as many network calls in flight as the model
has requests; unreadable images are reported, not fatal; an image that
makes no progress within the :class:`~.driver.Watch`'s limit stops it.
It is the executor of a run in one process (:func:`run`) and of each Ray
actor (:mod:`.distributed`); the run driver (:mod:`.driver`) keeps the
books. Torch-free: the network is any numpy callable with a
:class:`~repseg.deploy.runtimes.RunInfo` (:class:`Network`)."""
import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Iterable, Iterator, List, Optional

import numpy as np

from .driver import Job, Stalled, Unit, Watch, drive, plan, skipped
from .job import InferSettings, Network, Result, Summary, file_identity
from .outputs import Outputs
from .predict import EXACT, segment
from .recipe import exact_size
from .sources import (Item, Source, quiet_opencv, read_image,
                      video_frames)


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


def _finished(result: Result) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


class ThreadExecutor:
    """Segments a job's units in this process with ``net`` into
    ``out_dir`` (the image files; the driver writes the run's lists):
    images read (or a video's frames decoded, in order, on the calling
    thread), segmented and written on ``requests + 2`` worker threads
    (one with ``pipeline`` off), the network behind a semaphore of its
    requests; results in input order, at most twice the workers in
    flight."""

    #: one process segments: this one
    workers, remote = 1, False
    startup_seconds: Optional[float] = None

    def __init__(self, net: Network, settings: InferSettings, out_dir: str):
        quiet_opencv()
        r = net.recipe
        self.net, self.settings = net, settings
        # the files of each image; areas go back in the results (their CSV
        # is the driver's)
        self.outputs = Outputs(out_dir, r.classes, r.palette,
                               settings.overlay, settings.opacity,
                               settings.label_ids)
        self.busy = _Busy()
        self.calls = threading.BoundedSemaphore(max(1, net.info.requests))
        self.watch = Watch(settings.stall_timeout)
        self.threads = max(1, net.info.requests) + 2 \
            if settings.pipeline else 1

    @property
    def busy_seconds(self) -> float:
        return self.busy.total

    def _network(self, x: np.ndarray) -> np.ndarray:
        with self.calls, self.busy:
            return self.net.run(x)

    def _labels(self, x: np.ndarray) -> np.ndarray:
        with self.calls, self.busy:
            return self.net.labels(x)

    def work(self, item: Item, img: Optional[np.ndarray]) -> Result:
        """Read (unless decoded already), segment and write one image."""
        try:
            if img is None:
                img = read_image(item.source.path)
            labels, _, fit = segment(
                img, self._network, self.net.recipe,
                self._labels if self.net.labels is not None else None)
            files = self.outputs.write(item, img, labels)
        except Exception as e:  # noqa: B902  (one image's failure)
            reason = (str(e).strip().splitlines() or [''])[0][:300]
            return Result(str(item), item.key, 'failed',
                          reason=f'{type(e).__name__}: {reason}')
        s = self.settings
        return Result(
            str(item), item.key, 'done', files=files,
            labels=labels if s.keep_labels else None, fit=fit,
            exact_size=None if fit == EXACT else exact_size(
                self.net.recipe, img.shape[1], img.shape[0]),
            shares=self.outputs.shares(labels) if s.areas else None)

    def _items(self, units: Iterable[Unit]):
        """(item, image or None: read by the worker, done before) of every
        image of ``units``."""
        for unit in units:
            video = unit.video
            if video is None:
                for source in unit.sources:
                    yield Item(source), None, False
                continue
            for f, img in video_frames(video.path, self.settings.every,
                                       unit.start, unit.stop, unit.done):
                yield Item(video, f), img, f in unit.done

    def _result(self, future) -> Result:
        """The result of ``future``, waited for in short steps; raises
        :class:`~.driver.Stalled` when the run makes no progress within
        the watch's limit."""
        while True:
            try:
                return future.result(timeout=0.5)
            except FuturesTimeout:
                stuck = self.watch.stalled()
                if stuck is not None:
                    raise Stalled(str(stuck[0]), stuck[1],
                                  self.watch.limit(), self.net.info) from None

    def results(self, units: Iterable[Unit]) -> Iterator[Result]:
        """One result per image of ``units``, in their order."""
        pool = ThreadPoolExecutor(self.threads,
                                  thread_name_prefix='repseg-infer')
        ended = False
        try:
            window: collections.deque = collections.deque()
            for item, img, done in self._items(units):
                window.append(_finished(skipped(item, self.outputs)) if done
                              else pool.submit(self.watch.call, self.work,
                                               item, img))
                while window and (len(window) > 2 * self.threads
                                  or window[0].done()):
                    yield self._result(window.popleft())
            while window:
                yield self._result(window.popleft())
            ended = True
        finally:
            # a stalled or interrupted run does not wait for its threads
            # (one may never return)
            pool.shutdown(wait=ended, cancel_futures=not ended)


def run(net: Network, sources: List[Source], total: int, out_dir: str,
        settings: InferSettings, summary: Summary) -> Iterator[Result]:
    """Segment every image of ``sources`` with ``net`` into ``out_dir`` in
    this process (:class:`ThreadExecutor` driven by
    :func:`~.driver.drive`), yielding one :class:`Result` per image in
    input order; ``summary`` is filled as it goes (complete when the
    iterator is exhausted)."""
    job = Job(sources, total, out_dir, settings, net, summary)
    yield from drive(job, ThreadExecutor(net, settings, out_dir))


__all__ = ['InferSettings', 'Network', 'Result', 'Summary', 'ThreadExecutor',
           'plan', 'run', 'file_identity', 'read_image']
