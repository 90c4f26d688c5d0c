# Copyright (c) repseg contributors. All rights reserved.
"""The benchmark's figures from its timings: latency statistics per run,
the ratios between runs and rows, and the environment record
(``result['env']``)."""
import statistics
from typing import Callable, List

from ..deploy.runs import PYTORCH
from ..deploy.runtimes import QuantOptions, get_runtime
from ..ops.cpu import cpu_vector_isa
from ..ops.timing import contention_note
from .measure import environment
from .records import FUSED, NATIVE
from .settings import BenchmarkSettings


def summarize(rows: List, runs: list, times: dict,
              s: BenchmarkSettings) -> None:
    """Latency statistics per run and the ratios between runs (in place)."""
    for row, label, _ in runs:
        per_img = sorted(t / s.batch_size for t in times[(id(row), label)])
        q = statistics.quantiles(per_img, n=4) if len(per_img) > 1 else \
            [per_img[0]] * 3
        med = statistics.median(per_img)
        run = row.runs[label]
        run.img_per_s = 1.0 / med
        run.latency_ms = med * 1e3
        run.latency_iqr_ms = (q[2] - q[0]) * 1e3
        run.latency_min_ms = per_img[0] * 1e3
    by_name = {row.name: row for row in rows}
    for row in rows:
        base = by_name.get(row.baseline)
        row.speed_vs_baseline = (row.fused.img_per_s /
                                 base.fused.img_per_s) if base else None
        native = row.run(NATIVE)
        for label, run in row.runs.items():
            if label == FUSED:
                continue
            run.vs_pytorch = run.img_per_s / row.fused.img_per_s
            if run.throughput_img_per_s:
                run.throughput_vs_latency = (run.throughput_img_per_s /
                                             run.img_per_s)
            if native is not None and run.runtime != PYTORCH:
                run.vs_pytorch_native = run.img_per_s / native.img_per_s


def benchmark_env(runs: list, times: dict, s: BenchmarkSettings,
                  logger: Callable) -> dict:
    """The environment and protocol of the run (``result['env']``), with
    the note on timings that cannot be trusted (said through ``logger``
    too) and, with ``int8``, how each runtime made its INT8 model and what
    to know of it."""
    env = environment(s.dev, s.batch_size, s.model_dtype, dict(
        channels_last=s.channels_last, compile=s.compile, amp=s.amp))
    note = contention_note(times, {(id(row), label): f'{row.name} ({label})'
                                   for row, label, _ in runs})
    if note:
        logger(f'note: {note}')
    env.update(timing_note=note)
    if s.int8:   # how each runtime made its INT8 model, what to know of it
        options, isa = QuantOptions(), cpu_vector_isa()
        env.update(
            int8_schemes={n: get_runtime(n).quant_label(options)
                          for n in s.runtimes},
            runtime_notes=[t for n in s.runtimes
                           for t in get_runtime(n).notes(isa, options)])
    env.update(shape=list(s.input_size), warmup=s.warmup, iters=s.iters,
               repeat=s.repeat, fast=s.fast, backend=s.runtimes,
               conv_impl=s.conv_impl,
               timing='interleaved rounds; latency = per image, median and '
               'interquartile range over all timed batches')
    return env


__all__ = ['summarize', 'benchmark_env']
