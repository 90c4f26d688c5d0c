# Copyright (c) repseg contributors. All rights reserved.
"""The service's state and its one job, apart from HTTP: the network
(loaded and warmed on a thread while the server already answers
``/health``), the admission bound, the worker threads that decode,
segment and encode off the event loop (the network behind a semaphore of
the runtime's requests in flight, as ``tools/infer.py``'s engine does),
and what ``POST /segment`` returns: the label map PNG written exactly as
``tools/infer.py`` writes it, the overlay PNG, or JSON."""
import asyncio
import dataclasses
import logging
import os.path as osp
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

from ..infer.job import Network
from ..infer.outputs import encode_png, overlay
from ..infer.predict import segment
from ..infer.sources import quiet_opencv
from .limits import Admission, ServeError, decode_image
from .metrics import Metrics
from .settings import ServeSettings

log = logging.getLogger('repseg.serve')
OUTPUTS = ('labels', 'overlay', 'json')


@dataclasses.dataclass
class Answer:
    """What the worker made of one image."""
    body: bytes = b''
    media_type: str = 'image/png'
    data: Optional[dict] = None


class Service:
    """The network behind the app. ``load()`` returns the
    :class:`~repseg.infer.job.Network` (called once, on a thread, by
    :meth:`start`)."""

    def __init__(self, settings: ServeSettings, load: Callable[[], Network]):
        settings.check()
        self.settings, self._load = settings, load
        self.net: Optional[Network] = None
        self.error: Optional[str] = None
        self.ready = threading.Event()
        self.admission = Admission(1, settings.queue_for(1),
                                   settings.retry_after)
        self.pool: Optional[ThreadPoolExecutor] = None
        self._calls = threading.BoundedSemaphore(1)
        self._running = 0
        self.metrics = Metrics({
            'repseg_serve_in_flight': (
                'POST /segment requests admitted and not yet answered.',
                lambda: self.admission.admitted),
            'repseg_serve_queue_depth': (
                'Admitted requests beyond those the runtime runs at once.',
                lambda: self.admission.waiting),
            'repseg_serve_queue_limit': (
                'Requests admitted at most (running + queue).',
                lambda: self.admission.limit),
            'repseg_serve_ready': ('1 once the model is loaded and warm.',
                                   lambda: int(self.ready.is_set()))})

    def start(self) -> threading.Thread:
        """Load and warm the network on a thread; returns the thread."""
        t = threading.Thread(target=self._start, name='repseg-serve-load',
                             daemon=True)
        t.start()
        return t

    def _start(self) -> None:
        quiet_opencv()
        try:
            net = self._load()
            n = max(1, net.info.requests)
            s = self.settings
            self._calls = threading.BoundedSemaphore(n)
            self.admission = Admission(n, s.queue_for(n), s.retry_after)
            self.pool = ThreadPoolExecutor(
                s.workers or n + 2, thread_name_prefix='repseg-serve')
            self.net = net
            size = net.recipe.input_size or (256, 256)
            self._segment(np.zeros((*size, 3), np.uint8))   # warm
        except Exception as e:  # noqa: B902  (shown by /ready and the log)
            self.error = f'{type(e).__name__}: ' + (
                str(e).strip().splitlines() or [''])[0][:300]
            log.exception('the model could not be loaded')
            return
        log.info('ready: %s (%s, %s), %d request(s) at once, queue %d',
                 osp.basename(net.info.file), net.info.runtime,
                 net.info.precision, n, self.admission.queue)
        self.ready.set()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.net is not None:
            self.net.close()

    # the work, on the pool's threads
    def _network(self, x: np.ndarray) -> np.ndarray:
        with self._calls:
            return self.net.run(x)

    def _labels(self, x: np.ndarray) -> np.ndarray:
        with self._calls:
            return self.net.labels(x)

    def _segment(self, img: np.ndarray) -> np.ndarray:
        labels, _, _ = segment(
            img, self._network, self.net.recipe,
            self._labels if self.net.labels is not None else None)
        return labels

    def work(self, data: bytes, output: str, deadline: float) -> Answer:
        """Decode, segment and encode one image (skipped when its
        request's time is up before it starts)."""
        if time.monotonic() > deadline:
            return Answer()
        start = time.perf_counter()
        img = decode_image(data, self.settings.max_pixels)
        labels = self._segment(img)
        recipe = self.net.recipe
        if output == 'labels':
            return Answer(encode_png(labels))
        if output == 'overlay':
            if not recipe.palette:
                raise ServeError(400, 'this model records no palette, so '
                                 'there is no overlay: ask for output=labels '
                                 'or output=json')
            return Answer(encode_png(overlay(img, labels, recipe.palette,
                                             self.settings.opacity)))
        n = len(recipe.classes) or int(labels.max(initial=0)) + 1
        counts = np.bincount(labels.ravel(), minlength=n)[:n]
        shares = (counts / max(labels.size, 1)).tolist()
        names = recipe.classes or [str(i) for i in range(n)]
        return Answer(media_type='application/json', data=dict(
            height=int(img.shape[0]), width=int(img.shape[1]),
            classes=list(names), shares=dict(zip(names, shares)),
            model=self.identity(), seconds=time.perf_counter() - start))

    async def run(self, data: bytes, output: str, start: float) -> Answer:
        """:meth:`work` on the pool within the request's time limit (504
        past it; its work cancelled if not started); the request's place
        is freed when the work has really ended."""
        loop = asyncio.get_running_loop()
        remaining = start + self.settings.timeout - time.monotonic()
        future = self.pool.submit(self.work, data, output,
                                  start + self.settings.timeout)
        future.add_done_callback(
            lambda _: loop.call_soon_threadsafe(self.admission.leave))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future),
                                          max(remaining, 0.001))
        except asyncio.TimeoutError:
            future.cancel()
            raise self.too_late() from None

    def too_late(self) -> ServeError:
        return ServeError(504, 'the image was not segmented within the '
                          f'time limit of {self.settings.timeout:g} s: retry '
                          'later or send a smaller image (the server\'s '
                          'timeout setting)')

    def identity(self) -> dict:
        """Which model answers (its file's name, runtime, precision)."""
        info = self.net.info
        rec = info.record
        return dict(file=osp.basename(info.file), runtime=info.runtime,
                    precision=info.precision,
                    backbone=rec.backbone if rec else None,
                    decoder=rec.decode_head if rec else None)

    def model(self) -> dict:
        """``GET /model``: the file's record and what runs."""
        info, recipe = self.net.info, self.net.recipe
        rec = info.record.to_dict() if info.record else None
        return dict(self.identity(), classes=list(recipe.classes),
                    palette=[list(c) for c in recipe.palette],
                    input_size=info.input_size, requests=info.requests,
                    queue=self.admission.queue, mode=info.mode,
                    threads=info.threads, record=rec)


__all__ = ['Service', 'Answer', 'OUTPUTS']
