# Copyright (c) repseg contributors. All rights reserved.
"""Dynamic batching: calls made from several worker threads, each with one
image ``(1, 3, H, W)``, run together as one batch of the images that share
a size (PyTorch computes a batch of N small images faster than N calls).
Torch-free: the network is any ``run(x) -> y`` over a batch."""
import collections
import queue
import threading
from concurrent.futures import Future
from typing import Callable

import numpy as np


class Batcher:
    """``batcher(x)`` returns ``run(batch)[i]`` for the batch its ``x``
    joined: one thread gathers what the callers queued (up to ``size``
    inputs of the first one's shape, waiting at most ``wait`` seconds for
    more), runs it and hands each caller its row. An input of another shape
    waits for the next batch, in arrival order.

    Args:
        run: ``run(x)`` of a batch ``(N, ...)`` -> ``(N, ...)``.
        size (int): the largest batch.
        wait (float): seconds a batch waits for more inputs once it has one.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], size: int,
                 wait: float = 0.002):
        if size < 1:
            raise ValueError(f'batch size must be 1 or more, got {size}')
        self.run, self.size, self.wait = run, size, wait
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.batches = 0
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name='repseg-batcher')
        self.thread.start()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        future: Future = Future()
        self.inbox.put((x, future))
        return future.result()

    def _gather(self, held: collections.deque) -> list:
        """The next batch: the oldest input and those of its shape (held
        over from earlier gathers first, then newly queued), up to
        ``size``; the others are held for the next, in arrival order."""
        first = held.popleft() if held else self.inbox.get()
        if first is None:
            return []
        batch, rest, shape = [first], collections.deque(), first[0].shape
        while held:
            item = held.popleft()
            fits = item[0].shape == shape and len(batch) < self.size
            (batch if fits else rest).append(item)
        while len(batch) < self.size:
            try:
                item = self.inbox.get(timeout=self.wait)
            except queue.Empty:
                break
            if item is None:        # closing: finish what is here first
                self.inbox.put(None)
                break
            (batch if item[0].shape == shape else rest).append(item)
        held.extend(rest)
        return batch

    def _serve(self) -> None:
        held: collections.deque = collections.deque()
        while True:
            batch = self._gather(held)
            if not batch:
                return
            try:
                out = self.run(np.concatenate([x for x, _ in batch]))
                self.batches += 1
                for i, (_, future) in enumerate(batch):
                    future.set_result(out[i:i + 1])
            except Exception as e:  # noqa: B902  (every caller gets it)
                for _, future in batch:
                    future.set_exception(e)

    def close(self) -> None:
        """Stop the gathering thread once the queued calls are done."""
        self.inbox.put(None)
        self.thread.join()


__all__ = ['Batcher']
