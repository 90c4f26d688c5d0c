# Copyright (c) repseg contributors. All rights reserved.
"""Speed benchmark of FUSED segmentors (the paper's Table 8 speed test).

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
import copy
import dataclasses
import os.path as osp
import shutil
import statistics
import tempfile
import time
import warnings
from contextlib import nullcontext
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..deploy.build import (SegForward, build_segmentor, check_shape,
                            takes_argument)
from ..deploy.onnx import to_onnx
from ..deploy.record import config_input_size
from ..deploy.runs import Int8Request, make_runs
from ..deploy.runtimes import QuantOptions, get_runtime, runtime_names
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import load_cfg
from ..errors import UsageError, opt
from ..ops.cpu import cpu_vector_isa, seen_isa
from ..ops.nnpack_conv import (count_nnpack_convs, count_nnpack_runs,
                               is_nnpack, kernel_transform_bytes,
                               resolve_conv_impl, use_nnpack_convs)
from ..reparam import (assert_fused, compare_outputs, find_unfused,
                       reparameterize_model)
from ..ops.timing import contention_note, time_interleaved
from ..quant.equalize import equalization_lines, equalize_
from .measure import count_gflops, environment, peak_forward_memory, sync
from .profile import profile_layers
from .records import (BF16, FUSED, NATIVE, PYTORCH, UNFUSED, ModelResult,
                      Run, is_resnet)

CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')

# name, config, ResNet baseline, paper Table 8 (mIoU, examples/s on 1080Ti)
LINEUP = [
    ('RepVGG-B1g2-fast', 'pspnet_repvgg_b1g2_fast.py', 'ResNet-50-D8',
     78.88, 10.9),
    ('ResNet-50-D8', 'pspnet_r50-d8.py', None, 77.17, 10.4),
    ('RepVGG-B1g2', 'pspnet_repvgg_b1g2.py', 'ResNet-50-D8', 78.70, 8.0),
    ('RepVGG-B2-fast', 'pspnet_repvgg_b2_fast.py', 'ResNet-101-D8', 79.52,
     6.9),
    ('ResNet-101-D8', 'pspnet_r101-d8.py', None, 78.51, 6.7),
    ('RepVGG-B2', 'pspnet_repvgg_b2.py', 'ResNet-101-D8', 80.57, 4.5),
]
DTYPES = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)


@dataclasses.dataclass
class BenchmarkSettings:
    """How to run the benchmark (one field per option of
    tools/benchmark.py). ``None`` batch size / warm-up / iterations take the
    paper's GPU protocol on a GPU (16 / 50 / 50) and 1 / 1 / 2 on a CPU."""
    device: str = 'cpu'
    batch_size: Optional[int] = None
    input_size: Optional[Sequence[int]] = None
    warmup: Optional[int] = None
    iters: Optional[int] = None
    repeat: int = 3
    dtype: str = 'fp32'
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    compare_unfused: bool = False
    flops: bool = True
    fast: bool = False
    backend: Sequence[str] = ()
    conv_impl: str = 'auto'
    compare_conv_impl: bool = False
    profile: bool = False
    int8: bool = False
    equalize: str = 'off'
    bf16: bool = False
    throughput: int = 0

    @classmethod
    def of(cls, options: dict, **overrides) -> 'BenchmarkSettings':
        """Settings from a mapping that may hold other keys too (e.g. a
        tool's ``vars(args)``); ``overrides`` win."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in options.items() if k in names},
                      **overrides})

    @property
    def dev(self) -> torch.device:
        return torch.device(self.device)

    @property
    def tdtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def resolved(self) -> 'BenchmarkSettings':
        """A checked copy with the defaults filled in and ``conv_impl``
        resolved (raises :class:`~repseg.errors.UsageError`)."""
        s = dataclasses.replace(self)
        on_gpu = s.dev.type == 'cuda'
        if on_gpu and not torch.cuda.is_available():
            raise UsageError(f'{opt("device", self.device)} was asked for but '
                             'CUDA is not available; use '
                             f'{opt("device", "cpu")}')
        s.batch_size = s.batch_size or (16 if on_gpu else 1)
        s.warmup = (50 if on_gpu else 1) if s.warmup is None else s.warmup
        s.iters = (50 if on_gpu else 2) if s.iters is None else s.iters
        if s.batch_size < 1 or s.iters < 1 or s.repeat < 1 or s.warmup < 0:
            raise UsageError('batch size, iterations and repeats must be >= '
                             '1 and warm-up >= 0')
        if s.input_size is not None:
            s.input_size = check_shape(s.input_size)
        if s.dtype not in DTYPES:
            raise UsageError(f'{opt("dtype", None)} must be one of '
                             f'{sorted(DTYPES)}')
        s._check_combinations()
        try:
            s.conv_impl = resolve_conv_impl(
                'native' if s.channels_last and s.conv_impl == 'auto' else
                s.conv_impl, s.dev, s.tdtype)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if s.compare_conv_impl and s.conv_impl == 'native':
            raise UsageError(f'{opt("compare_conv_impl")} times NNPACK convs '
                             'against native ones; it needs '
                             f'{opt("conv_impl", "nnpack")} (or '
                             "'auto' on a CPU with fp32)")
        return s

    @property
    def runtimes(self) -> List[str]:
        """The runtimes timed next to PyTorch (PyTorch itself dropped)."""
        names = [self.backend] if isinstance(self.backend, str) else list(
            self.backend or ())
        return [n for n in dict.fromkeys(names) if n != PYTORCH]

    def _check_combinations(self) -> None:
        bad = [n for n in self.runtimes if n not in runtime_names()]
        if bad:
            raise UsageError(f'{opt("backend", bad[0])} is not a runtime: '
                             f'choose from {PYTORCH!r}, '
                             f"{', '.join(map(repr, runtime_names()))}")
        if self.runtimes and (
                self.dev.type != 'cpu' or self.dtype != 'fp32'
                or self.compile or self.channels_last or self.amp):
            raise UsageError(
                f'{opt("backend", self.runtimes[0])} times the exported fp32 '
                f'model on the CPU: drop {opt("compile")} / '
                f'{opt("channels_last")} / {opt("amp")} and keep '
                f'{opt("dtype", "fp32")}')
        if self.channels_last and is_nnpack(self.conv_impl):
            raise UsageError(f'{opt("conv_impl", self.conv_impl)} runs NCHW '
                             'tensors; it cannot be combined with '
                             f'{opt("channels_last")}')
        if self.equalize != 'off' and not self.int8:
            raise UsageError(f'{opt("equalize", self.equalize)} adds INT8 '
                             'rows of the equalized model; it needs '
                             f'{opt("int8")} (and {opt("backend", None)})')
        if self.int8 and not self.runtimes:
            raise UsageError(f'{opt("int8")} times the INT8 model of a '
                             'runtime next to fp32; it needs '
                             + ' or '.join(opt('backend', n)
                                           for n in runtime_names()))
        if self.bf16 and (self.dtype != 'fp32' or self.amp):
            raise UsageError(f'{opt("bf16")} times a bf16 copy of each fp32 '
                             f'model next to it; drop {opt("dtype", None)} '
                             f'/ {opt("amp")}')
        if self.throughput and not self.runtimes:
            raise UsageError(f'{opt("throughput", self.throughput)} times '
                             'the runtimes in throughput mode; it needs '
                             f'{opt("backend", None)}')
        if self.throughput < 0:
            raise UsageError(f'{opt("throughput", self.throughput)}: give '
                             'the images per round (1 or more), or 0')
        if self.profile and (self.compile or self.runtimes):
            raise UsageError(f'{opt("profile")} times the layers of the eager '
                             f'PyTorch model; drop {opt("compile")} / '
                             f'{opt("backend", None)}')

    def autocast(self):
        """The autocast context of ``amp`` (bf16 on the CPU)."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.dev.type, dtype=torch.bfloat16
                              if self.dev.type == 'cpu' else torch.float16)


def _runtime_runs(module, x, tmp_dir, row, s: 'BenchmarkSettings',
                  logger: Callable) -> list:
    """Export ``module`` (the fused model) to ONNX at the benchmark shape
    and return ``[(label, callable)]`` that run it in each runtime of
    ``s.runtimes`` (:func:`repseg.deploy.runs.make_runs`): fp32 (label =
    the runtime's name), bf16 with ``s.bf16`` where the runtime and the CPU
    have it, INT8 with ``s.int8`` (calibrated on random inputs: this is for
    timing only; accuracy under INT8: tools/quantize.py), and with
    ``s.equalize`` also the INT8 model of the equalized fused model (label
    ``<runtime>_int8_eq``: the repair changes weights only, so its speed
    should not change). Each run's output is compared with PyTorch and what
    the runtime says it ran is recorded in its :class:`Run` of
    ``row.runs``."""
    onnx_path = osp.join(tmp_dir, f'{row.name}.onnx')
    to_onnx(module, x[:1], onnx_path)
    with torch.no_grad():
        ref = module(x[:1])
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(x[:1].shape, generator=gen).numpy()
             for _ in range(4)]
    runtimes = [get_runtime(n) for n in s.runtimes]
    precisions = ['fp32'] + (['bf16'] if s.bf16 else []) + \
        (['int8'] if s.int8 else [])
    made = make_runs(onnx_path, tmp_dir, row.name + '_{runtime}_{precision}',
                     runtimes, precisions, Int8Request(calib), log=logger)
    if s.int8 and s.equalize != 'off':
        seg = copy.deepcopy(module.segmentor)
        row.equalization = equalize_(seg, calib, s.equalize)
        logger(f'{row.name}: '
               + ' '.join(equalization_lines(row.equalization)))
        eq_onnx = osp.join(tmp_dir, f'{row.name}_eq.onnx')
        to_onnx(SegForward(seg), x[:1], eq_onnx)
        made += make_runs(eq_onnx, tmp_dir,
                          row.name + '_{runtime}_eq_{precision}', runtimes,
                          ['int8'], Int8Request(calib), s.equalize, logger)
    order = {n: i for i, n in enumerate(s.runtimes)}
    made.sort(key=lambda m: order[m.runtime])   # each runtime's rows together
    runs = []
    for m in made:
        run = row.runs[m.label] = Run.of(m.info, equalize=m.equalize,
                                         file=m.file)
        run.set_check(compare_outputs(ref, m.forward(x[:1])))
        runs.append((m.label, m.forward))
    return runs


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


def build_for_benchmark(config: str,
                        checkpoint: Optional[str] = None,
                        fast: bool = False,
                        cfg_options: Optional[dict] = None,
                        logger: Callable = print) -> nn.Module:
    """Build the (unfused) segmentor of ``config`` in eval mode, optionally
    with 'fast' dilation (said through ``logger``: what it changed) and
    weights from ``checkpoint``."""
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise UsageError(
            f'checkpoint {checkpoint!r} does not exist (the benchmark never '
            'falls back to random weights when a checkpoint is named)')
    cfg = load_cfg(config, cfg_options=cfg_options)
    if fast:
        name = osp.basename(config)
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


def default_input_size(entries: List[dict]) -> tuple:
    """The input size the entries' configs test at (one for all: the
    models are timed on the same input)."""
    sizes = {}
    for e in entries:
        cfg = load_cfg(e['config'], cfg_options=e.get('cfg_options'))
        sizes.setdefault(check_shape(config_input_size(cfg)), e['name'])
    if len(sizes) > 1:
        listed = ', '.join(f'{n} {h}x{w}' for (h, w), n in sizes.items())
        raise UsageError(f'the configs test at different input sizes '
                         f'({listed}); time them at one size with '
                         f'{opt("input_size", None)} H W')
    return next(iter(sizes))


def pair_models(paths: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    """``[CONFIG [CHECKPOINT]] ...`` as the benchmark tool takes them: a
    ``.py`` file starts a model, anything after it until the next ``.py``
    is its checkpoint (at most one)."""
    pairs: List[list] = []
    for path in paths:
        if path.endswith('.py'):
            pairs.append([path, None])
        elif not pairs:
            raise UsageError(f'{path!r} comes before any config: give '
                             'CONFIG [CHECKPOINT] ... (a config is a .py '
                             'file, its checkpoint follows it)')
        elif pairs[-1][1] is not None:
            raise UsageError(
                f'{pairs[-1][0]!r} has two checkpoints ({pairs[-1][1]!r} '
                f'and {path!r}): give at most one after each config')
        else:
            pairs[-1][1] = path
    return [tuple(p) for p in pairs]


def _is_resnet(config: str, cfg_options: Optional[dict]) -> bool:
    cfg = load_cfg(config, cfg_options=cfg_options)
    return is_resnet(str(cfg.model.get('backbone', {}).get('type', '')))


def lineup(fast: bool = False,
           config: Union[str, Sequence[str], None] = None,
           checkpoint: Optional[str] = None,
           cfg_options: Optional[dict] = None) -> List[dict]:
    """The paper's Table 8 rows (only the '-fast' ones and their ResNet
    baselines with ``fast``), or the rows of ``config``: one config (with
    ``checkpoint``), or several as the tool takes them (``[CONFIG
    [CHECKPOINT]] ...``, see :func:`pair_models`), each named after its
    file (``-fast`` appended with ``fast``). When exactly one of several
    configs has a ResNet backbone, the others' speed is compared with it
    (the 'vs ResNet' column)."""
    if config:
        if isinstance(config, str):
            models = [(config, checkpoint)]
        elif checkpoint is not None:
            raise UsageError('with several configs, give each checkpoint '
                             'after its config, not as checkpoint=')
        else:
            models = pair_models(config)
        rows = [dict(name=osp.splitext(osp.basename(c))[0] +
                     ('-fast' if fast else ''), config=c, checkpoint=k,
                     cfg_options=cfg_options) for c, k in models]
        names = [r['name'] for r in rows]
        if len(set(names)) < len(names):
            raise UsageError(f'a config is given twice ({", ".join(names)})'
                             ': give each model once')
        if len(rows) > 1:
            resnets = [r['name'] for r in rows
                       if _is_resnet(r['config'], cfg_options)]
            if len(resnets) == 1:
                for r in rows:
                    if r['name'] != resnets[0]:
                        r['baseline'] = resnets[0]
        return rows
    rows = [
        dict(name=n, config=osp.join(CONFIG_DIR, c), baseline=b,
             paper_miou=m, paper_speed=s) for n, c, b, m, s in LINEUP
    ]
    if fast:
        rows = [r for r in rows
                if r['name'].endswith('-fast') or r['baseline'] is None]
    return rows


def _compare(a_fwd, b_fwd, x, s: BenchmarkSettings) -> dict:
    with torch.no_grad(), s.autocast():
        return compare_outputs(a_fwd(x[:1]).float(), b_fwd(x[:1]).float())


def _build_entry(entry: dict, s: BenchmarkSettings, x: torch.Tensor,
                 tmp_dir: str, logger: Callable = print) -> tuple:
    """Build, fuse and check one entry; returns its row and its timed runs
    [(label, callable)]."""
    unfused = build_for_benchmark(entry['config'], entry.get('checkpoint'),
                                  s.fast, entry.get('cfg_options'), logger)
    if s.compare_unfused and not find_unfused(unfused):
        raise UsageError(
            f"{entry['name']}: the config builds an already fused "
            '(deploy) model, so there is no unfused form to compare '
            'with. Benchmark the training config (with its training '
            'checkpoint) to compare fused and unfused.')
    fused = reparameterize_model(unfused, inplace=not s.compare_unfused)
    assert_fused(fused)
    backbone = getattr(fused, 'backbone', None)
    row = ModelResult(
        name=entry['name'], config=entry['config'],
        baseline=entry.get('baseline'),
        paper_miou=entry.get('paper_miou'),
        paper_speed=entry.get('paper_speed'),
        dilation_mode=getattr(backbone, 'dilation_mode', None),
        backbone=type(backbone).__name__ if backbone is not None else None,
        decoder=type(getattr(fused, 'decode_head', fused)).__name__,
        params_m=sum(p.numel() for p in fused.parameters()) / 1e6)
    if s.flops:
        row.gflops = count_gflops(SegForward(fused),
                                  x[:1].float().to(s.dev))

    def prepared(model):
        return SegForward(_prepare(model, s.dev, s.tdtype, s.channels_last))

    def timed(fwd):
        return torch.compile(fwd) if s.compile else fwd

    native_fwd = prepared(copy.deepcopy(fused)) if s.compare_conv_impl \
        else None
    bf16_fwd = _Bf16(_prepare(copy.deepcopy(fused), s.dev, torch.bfloat16,
                              s.channels_last)) if s.bf16 else None
    fused_fwd = prepared(use_nnpack_convs(fused, s.conv_impl,
                                          inplace=True))
    row.nnpack_convs, row.convs = count_nnpack_convs(fused)
    torch_run = dict(precision=s.dtype, precision_ran=s.dtype)
    row.runs[FUSED] = Run(conv_impl=s.conv_impl, **torch_run)
    runs = [(FUSED, timed(fused_fwd))]
    if native_fwd is not None:
        row.runs[NATIVE] = Run(conv_impl='native', **torch_run)
        row.runs[NATIVE].set_check(_compare(fused_fwd, native_fwd, x, s))
        runs.append((NATIVE, timed(native_fwd)))
    if bf16_fwd is not None:
        row.runs[BF16] = Run(precision='bf16', precision_ran='bf16',
                             conv_impl='native')
        row.runs[BF16].set_check(_compare(fused_fwd, bf16_fwd, x, s))
        runs.append((BF16, timed(bf16_fwd)))
    if s.runtimes:
        runs += _runtime_runs(fused_fwd, x, tmp_dir, row, s, logger)
    if s.compare_unfused:
        unfused_fwd = prepared(use_nnpack_convs(unfused, s.conv_impl,
                                                inplace=True))
        row.runs[UNFUSED] = Run(conv_impl=s.conv_impl, **torch_run)
        row.runs[UNFUSED].set_check(_compare(unfused_fwd, fused_fwd, x, s))
        runs.append((UNFUSED, timed(unfused_fwd)))
    return row, runs


def _time_runs(runs: list, x: torch.Tensor, s: BenchmarkSettings,
               logger: Callable) -> dict:
    """Warm up and measure the memory of every run, then time them in
    interleaved rounds; returns {(id(row), label): [seconds per batch]}."""
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


def _time_throughput(rows: list, x: torch.Tensor, s: BenchmarkSettings,
                     logger: Callable) -> None:
    """Every runtime run again in throughput mode (the runtime's streams
    and requests, ``s.throughput`` images in flight per round through
    ``submit``), in interleaved rounds; images/s, streams and requests (as
    the runtime reads them back) into each :class:`Run`."""
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


def _summarize(rows: list, runs: list, times: dict,
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


def run_benchmark(entries: List[dict],
                  settings: Optional[BenchmarkSettings] = None,
                  logger: Callable = print,
                  **options) -> dict:
    """Benchmark the fused form of every entry (dicts with ``name``,
    ``config`` and optional ``checkpoint``, ``baseline``, ``paper_miou``,
    ``cfg_options``).

    ``settings`` (or its fields as keyword ``options``, see
    :class:`BenchmarkSettings`): ``conv_impl`` (one of
    :data:`repseg.ops.CONV_IMPLS`) chooses how the 3x3 convs of every model
    run; ``compare_conv_impl`` also times each fused model with PyTorch's
    native convs (label ``native``); ``bf16`` also times a bfloat16 copy of
    each fused model (label ``bf16``, with its argmax agreement with fp32);
    ``profile`` adds the time by layer kind to every run
    (:func:`repseg.benchmark.profile.profile_layers`).

    Returns ``{'env': ..., 'rows': [ModelResult, ...]}`` (one
    :class:`~.records.ModelResult` per entry, one :class:`~.records.Run`
    per timed form; fields: docs/benchmark.md).
    """
    if 'shape' in options:   # the old name, for one release
        warnings.warn('run_benchmark(shape=...) is deprecated (removed in '
                      'the next release): use input_size=...',
                      DeprecationWarning, stacklevel=2)
        options['input_size'] = options.pop('shape')
    s = (settings or BenchmarkSettings(**options)).resolved()
    if s.input_size is None:
        s.input_size = default_input_size(entries)
    if s.dtype == 'fp16' and s.dev.type != 'cuda':
        logger('note: fp16 convolutions are slow or unsupported on CPU; '
               'bf16 is the CPU half-precision option')
    if (s.bf16 or s.dtype == 'bf16') and s.dev.type == 'cpu':
        isa = cpu_vector_isa(with_caps=False)
        if not ('BF16' in seen_isa(isa) or 'AMX' in seen_isa(isa)):
            logger(f'note: this CPU ({isa}) has no AVX512_BF16 or AMX: bf16 '
                   'convs run on slow fallback kernels here (with oneDNN '
                   'capped at AVX2, one 257x257 PSPNet-B1g2 forward took '
                   'minutes); expect it to be far slower than fp32')
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch_size, 3, *s.input_size, generator=gen).to(
        s.dev, s.tdtype)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    tmp_dir = tempfile.mkdtemp(prefix='repseg_bench_')
    rows, runs = [], []   # runs: (row, label, callable)
    try:
        for entry in entries:
            t0 = time.time()
            row, entry_runs = _build_entry(entry, s, x, tmp_dir, logger)
            rows.append(row)
            runs += [(row, label, fn) for label, fn in entry_runs]
            logger(f'built {row.name} ({row.params_m:.2f} M params '
                   f'fused, {row.nnpack_convs}/{row.convs} convs on '
                   f'NNPACK) in {time.time() - t0:.1f} s')
        times = _time_runs(runs, x, s, logger)
        if s.throughput:
            _time_throughput(rows, x, s, logger)
        if s.profile:
            for row, label, fn in runs:
                with s.autocast():
                    row.runs[label].profile = profile_layers(
                        fn, x, sync=lambda: sync(s.dev))
            logger('profiled every model by layer kind')
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    _summarize(rows, runs, times, s)
    env = environment(s.dev, s.batch_size, s.dtype, dict(
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
    return dict(env=env, rows=rows)


__all__ = [
    'LINEUP', 'lineup', 'pair_models', 'BenchmarkSettings',
    'build_for_benchmark', 'run_benchmark'
]
