# Copyright (c) repseg contributors. All rights reserved.
"""The benchmark's timing: every run warmed up and its memory measured,
then all timed in interleaved rounds (round r times every run once), so
that ratios between rows are measured side by side; the runtimes again in
throughput mode; the time by layer kind (``profile``)."""
import statistics
from typing import Callable, List

import torch
import torch.nn as nn

from ..deploy.runtimes import get_runtime
from ..ops.nnpack_conv import count_nnpack_runs, kernel_transform_bytes
from ..ops.timing import time_interleaved
from .measure import peak_forward_memory, sync
from .profile import profile_layers
from .settings import BenchmarkSettings


def time_runs(runs: list, x: torch.Tensor, s: BenchmarkSettings,
              logger: Callable) -> dict:
    """Warm up and measure the memory of every run ``(row, label,
    callable)``, then time them in interleaved rounds; returns
    {(id(row), label): [seconds per batch]}."""
    def call(fn):
        with torch.no_grad(), s.autocast():
            out = fn(x)
        sync(s.dev)
        return out

    for row, label, fn in runs:
        run = row.runs[label]
        for _ in range(s.warmup):
            call(fn)
        mem = peak_forward_memory(lambda inp: call(fn), x, s.dev)
        run.peak_mem_mib = None if mem is None else mem / 2**20
        if s.conv_impl == 'nnpack-precomputed' and isinstance(fn, nn.Module):
            # held between forwards, like the weights: not in the peak above
            run.kernel_transforms_mib = kernel_transform_bytes(fn) / 2**20
    times = time_interleaved(
        {(id(row), label): fn for row, label, fn in runs}, call, s.repeat,
        s.iters, lambda r: logger(f'round {r + 1}/{s.repeat} done'))
    for row, label, fn in runs:
        if isinstance(fn, nn.Module) and row.nnpack_convs:
            # what really ran NNPACK (the size policy may send convs to
            # PyTorch's conv), counted at the calls
            run = row.runs[label]
            (run.nnpack_convs_ran, run.nnpack_calls,
             run.native_conv_calls) = count_nnpack_runs(fn, reset=True)
    return times


def time_throughput(rows: List, x: torch.Tensor, s: BenchmarkSettings,
                    logger: Callable) -> None:
    """Every runtime run again in throughput mode (the runtime's streams
    and requests, ``s.throughput`` images in flight per round through
    ``submit``), in interleaved rounds; images/s, streams and requests (as
    the runtime reads them back) into each :class:`~.records.Run`."""
    models = {}
    for row in rows:
        for label, run in row.runtime_runs().items():
            model = get_runtime(run.runtime).load(
                run.file, run.precision, threads=torch.get_num_threads(),
                mode='throughput')
            models[(id(row), label)] = (run, model)
    image = x[:1].float().cpu().numpy()

    def call(model):
        for future in [model.submit(image) for _ in range(s.throughput)]:
            future.result()

    for _, model in models.values():   # warm-up
        call(model)
    times = time_interleaved({k: m for k, (_, m) in models.items()}, call,
                             s.repeat, 1, lambda r: logger(
                                 f'throughput round {r + 1}/{s.repeat} '
                                 'done'))
    for key, (run, model) in models.items():
        run.throughput_img_per_s = s.throughput / statistics.median(
            times[key])
        run.throughput_streams = model.info.streams
        run.throughput_requests = model.info.requests
        model.close()


def profile_runs(runs: list, x: torch.Tensor, s: BenchmarkSettings,
                 logger: Callable) -> None:
    """The time by layer kind and part of one forward of every run
    (:func:`~.profile.profile_layers`) into its ``profile``."""
    for row, label, fn in runs:
        with s.autocast():
            row.runs[label].profile = profile_layers(
                fn, x, sync=lambda: sync(s.dev))
    logger('profiled every model by layer kind')


__all__ = ['time_runs', 'time_throughput', 'profile_runs']
