"""The dynamic batcher of the PyTorch inference path: calls from several
threads with inputs of one shape run as one batch, each caller gets its own
row, inputs of another shape wait for their own batch, errors reach every
caller of the batch."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from repseg.infer.batching import Batcher


def test_calls_from_threads_run_in_batches_of_one_shape():
    sizes = []
    barrier = threading.Barrier(8)

    def run(x):
        sizes.append(x.shape)
        return x * 2 + np.arange(x.shape[0]).reshape(-1, 1, 1, 1) * 0

    b = Batcher(run, size=4, wait=0.2)
    xs = [np.full((1, 3, 4 + (i % 2) * 2, 5), i, np.float32)
          for i in range(8)]

    def call(x):
        barrier.wait()
        return b(x)

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(call, xs))
    b.close()
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y, x * 2)   # each caller its own row
    # every batch holds one shape, and calls were batched (8 calls, fewer
    # runs; at most 4 per run)
    assert all(s[0] <= 4 for s in sizes)
    assert sum(s[0] for s in sizes) == 8 and len(sizes) < 8
    assert {s[2] for s in sizes} == {4, 6}


def test_an_error_reaches_every_caller_and_the_batcher_goes_on():
    calls = []

    def run(x):
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise RuntimeError('boom')
        return x

    b = Batcher(run, size=2, wait=0.01)
    with pytest.raises(RuntimeError, match='boom'):
        b(np.zeros((1, 1, 2, 2), np.float32))
    np.testing.assert_array_equal(b(np.ones((1, 1, 2, 2), np.float32)),
                                  np.ones((1, 1, 2, 2), np.float32))
    b.close()
    with pytest.raises(ValueError, match='1 or more'):
        Batcher(run, size=0)
