# Copyright (c) repseg contributors. All rights reserved.
"""The benchmark's models: each entry built, fused and checked
(:func:`build_entry`), with the forms it is timed in: PyTorch fused (and
with native convs, in bf16, unfused) and, through the INT8 pipeline that
quantize runs too (:func:`repseg.quant.pipeline.make_int8_models`), each
runtime's fp32 / bf16 / INT8 model of it."""
import copy
import os.path as osp
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config

from ..deploy.build import SegForward, build_segmentor, takes_argument
from ..deploy.onnx import to_onnx
from ..deploy.runtimes import get_runtime
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import load_cfg
from ..errors import UsageError
from ..ops.nnpack_conv import count_nnpack_convs, use_nnpack_convs
from ..quant.equalize import equalization_lines
from ..quant.pipeline import Int8Job, make_int8_models
from ..reparam import (assert_fused, compare_outputs, find_unfused,
                       reparameterize_model)
from .measure import count_gflops
from .records import BF16, FUSED, NATIVE, UNFUSED, ModelResult, Run
from .settings import BenchmarkSettings


class _Bf16(SegForward):
    """The fused segmentor in bfloat16 (PyTorch's native convs: oneDNN,
    AMX / AVX512_BF16 where the CPU has them) called with the benchmark's
    fp32 input; returns fp32 logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(torch.bfloat16)).float()


def _prepare(model, device, dtype, channels_last):
    model = model.to(device)
    if dtype != torch.float32:
        model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_for_benchmark(config: Union[str, Config],
                        checkpoint: Optional[str] = None,
                        fast: bool = False,
                        cfg_options: Optional[dict] = None,
                        logger: Callable = print) -> nn.Module:
    """Build the (unfused) segmentor of ``config`` (a file, or a loaded
    config, which is left as it is) in eval mode, optionally with 'fast'
    dilation (said through ``logger``: what it changed) and weights from
    ``checkpoint``."""
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise UsageError(
            f'checkpoint {checkpoint!r} does not exist (the benchmark never '
            'falls back to random weights when a checkpoint is named)')
    cfg = copy.deepcopy(config) if isinstance(config, Config) else \
        load_cfg(config, cfg_options=cfg_options)
    if fast:
        name = osp.basename(cfg.filename or str(config))
        backbone = cfg.model.backbone
        if takes_argument(backbone.get('type'), 'dilation_mode'):
            before = backbone.get('dilation_mode', 'full')
            backbone.dilation_mode = 'fast'
            logger(f"fast: {name}: the backbone's dilation_mode "
                   f"{before!r} -> 'fast'" if before != 'fast' else
                   f"fast: {name}: the backbone's dilation_mode is 'fast' "
                   'already')
        else:
            logger(f"fast: {name}: its backbone ({backbone.get('type')}) "
                   'has no dilation_mode; unchanged')
    model = build_segmentor(cfg)
    if checkpoint is not None:
        load_any_checkpoint(model, checkpoint)
    return model.eval()


def runtime_runs(module: SegForward, x: torch.Tensor, tmp_dir: str,
                 row: ModelResult, s: BenchmarkSettings,
                 logger: Callable) -> list:
    """``[(label, callable)]`` of ``module`` (the fused model) in each
    runtime of ``s.runtimes``, made by the INT8 pipeline at the benchmark
    shape: fp32 (label = the runtime's name), bf16 with ``s.bf16`` where
    the runtime and the CPU have it, INT8 with ``s.int8`` (calibrated on
    random inputs: this is for timing only; accuracy under INT8:
    tools/quantize.py), and with ``s.equalize`` also the INT8 model of the
    equalized fused model (label ``<runtime>_int8_eq``: the repair changes
    weights only, so its speed should not change). Each run's output is
    compared with PyTorch and what the runtime says it ran is recorded in
    its :class:`Run` of ``row.runs``."""
    with torch.no_grad():
        ref = module(x[:1])
    gen = torch.Generator().manual_seed(1)
    job = Int8Job([get_runtime(n) for n in s.runtimes],
                  [torch.randn(x[:1].shape, generator=gen).numpy()
                   for _ in range(4)],
                  precisions=['fp32'] + (['bf16'] if s.bf16 else []) +
                  (['int8'] if s.int8 else []),
                  pattern=row.name + '_{runtime}_{precision}')

    def export(segmentor, path):
        to_onnx(SegForward(segmentor), x[:1], path)

    made = make_int8_models(module.segmentor, export, tmp_dir, job,
                            logger).runs
    if s.int8 and s.equalize != 'off':
        eq = make_int8_models(module.segmentor, export, tmp_dir, Int8Job(
            job.runtimes, job.inputs, ['int8'], equalize=s.equalize,
            pattern=row.name + '_{runtime}_eq_{precision}'), logger)
        row.equalization = eq.equalization
        logger(f'{row.name}: '
               + ' '.join(equalization_lines(row.equalization)))
        made += eq.runs
    order = {n: i for i, n in enumerate(s.runtimes)}
    made.sort(key=lambda m: order[m.runtime])   # each runtime's rows together
    runs = []
    for m in made:
        run = row.runs[m.label] = Run.of(m.info, equalize=m.equalize,
                                         file=m.file)
        run.set_check(compare_outputs(ref, m.forward(x[:1])))
        runs.append((m.label, m.forward))
    return runs


def _compare(a_fwd, b_fwd, x, s: BenchmarkSettings) -> dict:
    with torch.no_grad(), s.autocast():
        return compare_outputs(a_fwd(x[:1]).float(), b_fwd(x[:1]).float())


def _result(entry: dict, fused: nn.Module) -> ModelResult:
    backbone = getattr(fused, 'backbone', None)
    return ModelResult(
        name=entry['name'], config=entry['config'],
        baseline=entry.get('baseline'),
        paper_miou=entry.get('paper_miou'),
        paper_speed=entry.get('paper_speed'),
        dilation_mode=getattr(backbone, 'dilation_mode', None),
        backbone=type(backbone).__name__ if backbone is not None else None,
        decoder=type(getattr(fused, 'decode_head', fused)).__name__,
        params_m=sum(p.numel() for p in fused.parameters()) / 1e6)


def build_entry(entry: dict, s: BenchmarkSettings, x: torch.Tensor,
                tmp_dir: str, logger: Callable = print) -> tuple:
    """Build, fuse and check one entry (its config loaded once:
    ``entry['cfg']`` where the line-up loaded it); returns its row and its
    timed runs [(label, callable)]."""
    unfused = build_for_benchmark(entry.get('cfg') or entry['config'],
                                  entry.get('checkpoint'), s.fast,
                                  entry.get('cfg_options'), logger)
    if s.compare_unfused and not find_unfused(unfused):
        raise UsageError(
            f"{entry['name']}: the config builds an already fused "
            '(deploy) model, so there is no unfused form to compare '
            'with. Benchmark the training config (with its training '
            'checkpoint) to compare fused and unfused.')
    fused = reparameterize_model(unfused, inplace=not s.compare_unfused)
    assert_fused(fused)
    row = _result(entry, fused)
    if s.flops:
        row.gflops = count_gflops(SegForward(fused),
                                  x[:1].float().to(s.dev))

    def prepared(model, dtype=s.tdtype, kind=SegForward):
        return kind(_prepare(model, s.dev, dtype, s.channels_last))

    def timed(fwd):
        return torch.compile(fwd) if s.compile else fwd

    extra = []   # (label, precision, forward): compared with the fused run
    if s.compare_conv_impl:
        extra.append((NATIVE, s.model_dtype, prepared(copy.deepcopy(fused))))
    if s.bf16:
        extra.append((BF16, 'bf16', prepared(copy.deepcopy(fused),
                                             torch.bfloat16, _Bf16)))
    fused_fwd = prepared(use_nnpack_convs(fused, s.conv_impl, inplace=True))
    row.nnpack_convs, row.convs = count_nnpack_convs(fused)
    row.runs[FUSED] = Run(conv_impl=s.conv_impl, precision=s.model_dtype,
                          precision_ran=s.model_dtype)
    runs = [(FUSED, timed(fused_fwd))]
    for label, precision, fwd in extra:   # both on PyTorch's own convs
        row.runs[label] = Run(conv_impl='native', precision=precision,
                              precision_ran=precision)
        row.runs[label].set_check(_compare(fused_fwd, fwd, x, s))
        runs.append((label, timed(fwd)))
    if s.runtimes:
        runs += runtime_runs(fused_fwd, x, tmp_dir, row, s, logger)
    if s.compare_unfused:
        unfused_fwd = prepared(use_nnpack_convs(unfused, s.conv_impl,
                                                inplace=True))
        row.runs[UNFUSED] = Run(conv_impl=s.conv_impl,
                                precision=s.model_dtype,
                                precision_ran=s.model_dtype)
        row.runs[UNFUSED].set_check(_compare(unfused_fwd, fused_fwd, x, s))
        runs.append((UNFUSED, timed(unfused_fwd)))
    return row, runs


__all__ = ['build_for_benchmark', 'build_entry', 'runtime_runs']
