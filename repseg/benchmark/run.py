# Copyright (c) repseg contributors. All rights reserved.
"""Speed benchmark of FUSED segmentors (the paper's Table 8 speed test):
:func:`run_benchmark` puts the rooms together (settings
:mod:`.settings`, line-up :mod:`.configs`, models :mod:`.build`, timing
:mod:`.timing`, figures :mod:`.summary`).

Every model is converted with :func:`repseg.reparameterize_model` (RepVGG
blocks fused, conv-BN pairs of heads and ResNet baselines folded, as the
paper did for its baselines) and :func:`repseg.reparam.assert_fused` checks
that nothing foldable is left. Models are timed in interleaved rounds (round
r times every model once) so that ratios between rows are measured side by
side, under the same machine conditions.

On the CPU, every eligible 3x3 convolution of EVERY model (RepVGG and ResNet,
fused and unfused, backbone and head) runs NNPACK's Winograd kernels by
default (``conv_impl='auto'``, see :mod:`repseg.ops.nnpack_conv`): the CPU
counterpart of cuDNN choosing Winograd on the paper's GPU. ``'native'``
keeps PyTorch's default convolutions (oneDNN).
"""
import shutil
import tempfile
import time
from typing import Callable, List, Optional

import torch

from ..ops.cpu import cpu_vector_isa, seen_isa
from .build import build_entry
from .configs import default_input_size, load_entries
from .settings import BenchmarkSettings
from .summary import benchmark_env, summarize
from .timing import profile_runs, time_runs, time_throughput


def _precision_notes(s: BenchmarkSettings, logger: Callable) -> None:
    if s.model_dtype == 'fp16' and s.dev.type != 'cuda':
        logger('note: fp16 convolutions are slow or unsupported on CPU; '
               'bf16 is the CPU half-precision option')
    if 'bf16' in s.dtypes and s.dev.type == 'cpu':
        isa = cpu_vector_isa(with_caps=False)
        if not ('BF16' in seen_isa(isa) or 'AMX' in seen_isa(isa)):
            logger(f'note: this CPU ({isa}) has no AVX512_BF16 or AMX: bf16 '
                   'convs run on slow fallback kernels here (with oneDNN '
                   'capped at AVX2, one 257x257 PSPNet-B1g2 forward took '
                   'minutes); expect it to be far slower than fp32')


def _input(s: BenchmarkSettings) -> torch.Tensor:
    """The one input every model is timed on (seeded)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch_size, 3, *s.input_size, generator=gen).to(
        s.dev, s.tdtype)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _time_all(entries: List[dict], s: BenchmarkSettings, x: torch.Tensor,
              logger: Callable) -> tuple:
    """Build every entry, then time all runs side by side; returns
    ``(rows, runs, times)`` (runs: ``(row, label, callable)``)."""
    tmp_dir = tempfile.mkdtemp(prefix='repseg_bench_')
    rows, runs = [], []
    try:
        for entry in entries:
            t0 = time.time()
            row, entry_runs = build_entry(entry, s, x, tmp_dir, logger)
            rows.append(row)
            runs += [(row, label, fn) for label, fn in entry_runs]
            logger(f'built {row.name} ({row.params_m:.2f} M params '
                   f'fused, {row.nnpack_convs}/{row.convs} convs on '
                   f'NNPACK) in {time.time() - t0:.1f} s')
        times = time_runs(runs, x, s, logger)
        if s.throughput:
            time_throughput(rows, x, s, logger)
        if s.profile:
            profile_runs(runs, x, s, logger)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return rows, runs, times


def run_benchmark(entries: List[dict],
                  settings: Optional[BenchmarkSettings] = None,
                  logger: Callable = print,
                  **options) -> dict:
    """Benchmark the fused form of every entry (dicts with ``name``,
    ``config`` and optional ``checkpoint``, ``baseline``, ``paper_miou``,
    ``cfg_options``; :func:`~.configs.lineup` makes them), each config
    loaded once.

    ``settings`` (or its fields as keyword ``options``, see
    :class:`BenchmarkSettings`): ``conv_impl`` (one of
    :data:`repseg.ops.CONV_IMPLS`) chooses how the 3x3 convs of every model
    run; ``compare_conv_impl`` also times each fused model with PyTorch's
    native convs (label ``native``); ``dtype=('fp32', 'bf16')`` also
    times a bfloat16 copy of each fused model (label ``bf16``, with its
    argmax agreement with fp32); ``profile`` adds the time by layer kind
    to every run (:func:`repseg.benchmark.profile.profile_layers`).

    Returns ``{'env': ..., 'rows': [ModelResult, ...]}`` (one
    :class:`~.records.ModelResult` per entry, one :class:`~.records.Run`
    per timed form; fields: docs/benchmark.md).
    """
    s = (settings or BenchmarkSettings(**options)).resolved()
    entries = [dict(e) for e in entries]
    load_entries(entries)
    if s.input_size is None:
        s.input_size = default_input_size(entries)
    _precision_notes(s, logger)
    rows, runs, times = _time_all(entries, s, _input(s), logger)
    summarize(rows, runs, times, s)
    return dict(env=benchmark_env(runs, times, s, logger), rows=rows)


__all__ = ['run_benchmark']
