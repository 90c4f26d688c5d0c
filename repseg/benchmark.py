# Copyright (c) repseg contributors. All rights reserved.
"""Speed benchmark of FUSED segmentors (the paper's Table 8 speed test).

Every model is converted with :func:`repseg.reparameterize_model` (RepVGG
blocks fused, conv-BN pairs of heads and ResNet baselines folded, as the
paper did for its baselines) and :func:`assert_fused` checks that nothing
foldable is left. Models are timed in interleaved rounds (round r times every
model once) so that ratios between rows are measured side by side, under the
same machine conditions.

On the CPU, every eligible 3x3 convolution of EVERY model (RepVGG and ResNet,
fused and unfused, backbone and head) runs NNPACK's Winograd kernels by
default (``conv_impl='auto'``, see :mod:`repseg.ops.fast_conv`): the CPU
counterpart of cuDNN choosing Winograd on the paper's GPU. ``'native'``
keeps PyTorch's default convolutions (oneDNN).
"""
import copy
import json
import os
import os.path as osp
import platform
import shutil
import statistics
import tempfile
import time
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .apis.convert import build_segmentor
from .apis.runner import UsageError, load_any_checkpoint, load_cfg
from .layer_profile import FUNCTIONAL, profile_layers
from .ops.fast_conv import (count_fast_convs, is_nnpack,
                            kernel_transform_bytes, resolve_conv_impl,
                            use_fast_convs)
from .reparam import find_unfused, reparameterize_model

CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs')

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
MIN_SIDE = 32
DTYPES = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)


# decode head class -> the model's usual name, for the charts
_DECODER_NAMES = dict(PSPHead='PSPNet', UPerHead='UPerNet',
                      DepthwiseSeparableASPPHead='DeepLabV3+',
                      ASPPHead='DeepLabV3', FCNHead='FCN', FPNHead='FPN',
                      SegformerHead='SegFormer head')


class BenchmarkError(RuntimeError):
    """The model to benchmark is not in the state the benchmark requires."""


def lineup(fast: bool = False) -> List[dict]:
    """The paper's Table 8 rows (only the '-fast' ones and their ResNet
    baselines with ``fast``)."""
    rows = [
        dict(name=n, config=osp.join(CONFIG_DIR, c), baseline=b,
             paper_miou=m, paper_speed=s) for n, c, b, m, s in LINEUP
    ]
    if fast:
        rows = [r for r in rows
                if r['name'].endswith('-fast') or r['baseline'] is None]
    return rows


def assert_fused(model: nn.Module) -> None:
    """Raise :class:`BenchmarkError` if a multi-branch RepVGG block or a
    foldable conv-BN pair is left in ``model``."""
    left = find_unfused(model)
    if left:
        raise BenchmarkError(
            f'the model is not fully fused: {len(left)} multi-branch blocks '
            f'or foldable BatchNorms remain (e.g. {left[:3]}); run '
            'repseg.reparameterize_model on it first')


def check_shape(shape: Sequence[int]) -> tuple:
    """Validate an input size (H, W) for the benchmark/export tools."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) < MIN_SIDE:
        raise UsageError(
            f'input size {shape} is not supported: give H W (or one side) of '
            f'at least {MIN_SIDE} pixels, e.g. --shape 713 713')
    return shape


class SegForward(nn.Module):
    """``encode_decode`` of a segmentor as a plain ``forward(x)``: backbone,
    neck, decode head and the resize of the logits to the input size (what
    whole-image inference runs; no auxiliary head)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor
        # inference only; also keeps exporters that restore the wrapper's
        # mode (torch.onnx.export) from switching the segmentor to training
        self.eval()

    def forward(self, x):
        h, w = x.shape[-2:]
        meta = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))
                ] * x.shape[0]
        return self.segmentor.encode_decode(x, meta)


def build_for_benchmark(config: str,
                        checkpoint: Optional[str] = None,
                        fast: bool = False,
                        cfg_options: Optional[dict] = None) -> nn.Module:
    """Build the (unfused) segmentor of ``config`` in eval mode, optionally
    with 'fast' dilation and weights from ``checkpoint``."""
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise UsageError(
            f'checkpoint {checkpoint!r} does not exist (the benchmark never '
            'falls back to random weights when a checkpoint is named)')
    cfg = load_cfg(config, cfg_options=cfg_options)
    if fast:
        if cfg.model.backbone.get('type') == 'RepVGG':
            cfg.model.backbone.dilation_mode = 'fast'
    model = build_segmentor(cfg)
    if checkpoint is not None:
        load_any_checkpoint(model, checkpoint)
    return model.eval()


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _read_status(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _glibc():
    try:
        import ctypes
        return ctypes.CDLL('libc.so.6')
    except OSError:
        return None


def _set_mmap_threshold(nbytes: int) -> bool:
    libc = _glibc()
    if libc is None or not hasattr(libc, 'mallopt'):
        return False
    return bool(libc.mallopt(-3, nbytes))   # M_MMAP_THRESHOLD


@torch.no_grad()
def peak_forward_memory(fn, x, device) -> Optional[int]:
    """Peak memory of one forward in bytes: CUDA max allocated on GPU; on
    CPU the growth of the resident set over the forward.

    On CPU, for the duration of the measurement, large allocations are
    made to come from mmap (glibc ``M_MMAP_THRESHOLD`` = 1 MiB) so that
    freed tensors go back to the OS instead of staying in the heap, the
    heap is trimmed and the kernel's high-water mark reset: the figure is
    this forward's own, not inflated or hidden by earlier models. Afterwards
    the threshold goes back to glibc's maximum (32 MiB), so timing runs use
    the usual heap behaviour."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(x)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    libc = _glibc()
    _set_mmap_threshold(1 << 20)
    try:
        if libc is not None and hasattr(libc, 'malloc_trim'):
            libc.malloc_trim(0)
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')     # reset VmHWM to the current RSS
        except OSError:
            return None
        base = _read_status('VmRSS')
        fn(x)
        peak = _read_status('VmHWM')
    finally:
        _set_mmap_threshold(32 << 20)
    if base is None or peak is None:
        return None
    return max(0, peak - base)


def count_gflops(model: nn.Module, x: torch.Tensor) -> Optional[float]:
    """GFLOPs of one forward with mmengine's complexity analysis (fvcore
    convention: one multiply-add counts as one FLOP)."""
    from mmengine.analysis import FlopAnalyzer
    try:
        flops = FlopAnalyzer(model, (x, ))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        return flops.total() / 1e9
    except Exception:  # noqa: B902  (tracing failures must not stop timing)
        return None


def _ort_callable(module, x, tmp_dir, row):
    """Export ``module`` to ONNX at the benchmark shape and return a callable
    that runs it with onnxruntime (CPU); records the max difference."""
    from .apis.export import _require, to_onnx
    ort = _require('onnxruntime')
    path = osp.join(tmp_dir, f"{row['name']}.onnx")
    to_onnx(module, x[:1], path)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    with torch.no_grad():
        ref = module(x[:1]).numpy()
    got = sess.run(None, {'image': x[:1].numpy()})[0]
    row['onnxruntime_max_abs_diff'] = float(abs(ref - got).max())
    row['onnxruntime_max_abs_logit'] = float(abs(ref).max())

    def run(inp):
        return sess.run(None, {'image': inp.numpy()})[0]

    return run


def environment(device, batch, dtype, args) -> dict:
    import mmcv
    import mmengine

    import mmseg
    from . import __version__
    env = dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device)
                     if device.type == 'cuda' else platform.processor()
                     or platform.machine()),
        torch=torch.__version__, mmcv=mmcv.__version__,
        mmengine=mmengine.__version__, mmseg=mmseg.__version__,
        repseg=__version__, threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), batch=batch, dtype=dtype,
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        channels_last=args.get('channels_last', False),
        compile=args.get('compile', False), amp=args.get('amp', False))
    return env


def _prepare(model, device, dtype, channels_last):
    model = model.to(device)
    if dtype != torch.float32:
        model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def run_benchmark(entries: List[dict],
                  device: str = 'cpu',
                  batch_size: Optional[int] = None,
                  shape: Sequence[int] = (713, 713),
                  warmup: Optional[int] = None,
                  iters: Optional[int] = None,
                  repeat: int = 3,
                  dtype: str = 'fp32',
                  amp: bool = False,
                  channels_last: bool = False,
                  compile: bool = False,
                  compare_unfused: bool = False,
                  flops: bool = True,
                  fast: bool = False,
                  backend: str = 'pytorch',
                  conv_impl: str = 'auto',
                  compare_conv_impl: bool = False,
                  profile: bool = False,
                  logger=print) -> dict:
    """Benchmark the fused form of every entry (dicts with ``name``,
    ``config`` and optional ``checkpoint``, ``baseline``, ``paper_miou``).

    ``conv_impl`` (one of :data:`repseg.ops.CONV_IMPLS`) chooses how the
    3x3 convs of every model run; ``compare_conv_impl`` also times each
    fused model with PyTorch's native convs (label ``native``).
    ``profile`` adds ``{label}_profile`` to every row: one forward's time
    by layer kind and by part (:func:`repseg.layer_profile.profile_layers`).

    Returns ``{'env': ..., 'rows': [...]}``; see the README for the fields.
    """
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda was asked for but CUDA is not '
                         'available; use --device cpu')
    on_gpu = dev.type == 'cuda'
    batch_size = batch_size or (16 if on_gpu else 1)
    warmup = (50 if on_gpu else 1) if warmup is None else warmup
    iters = (50 if on_gpu else 2) if iters is None else iters
    if batch_size < 1 or iters < 1 or repeat < 1 or warmup < 0:
        raise UsageError('batch size, iterations and repeats must be >= 1 '
                         'and warm-up >= 0')
    shape = check_shape(shape)
    if dtype not in DTYPES:
        raise UsageError(f'--dtype must be one of {sorted(DTYPES)}')
    tdtype = DTYPES[dtype]
    if backend not in ('pytorch', 'onnxruntime'):
        raise UsageError("--backend must be 'pytorch' or 'onnxruntime'")
    if backend == 'onnxruntime' and (dev.type != 'cpu' or dtype != 'fp32'
                                     or compile or channels_last or amp):
        raise UsageError('--backend onnxruntime times the fp32 model on the '
                         'CPU (no --compile/--channels-last/--amp)')
    if channels_last and is_nnpack(conv_impl):
        raise UsageError(f'--conv-impl {conv_impl} runs NCHW tensors; it '
                         'cannot be combined with --channels-last')
    try:
        conv_impl = resolve_conv_impl(
            'native' if channels_last and conv_impl == 'auto' else conv_impl,
            dev, tdtype)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if profile and (compile or backend == 'onnxruntime'):
        raise UsageError('--profile times the layers of the eager PyTorch '
                         'model; drop --compile / --backend onnxruntime')
    if compare_conv_impl and conv_impl == 'native':
        raise UsageError('--compare-conv-impl times NNPACK convs against '
                         "native ones; it needs --conv-impl 'nnpack' (or "
                         "'auto' on a CPU with fp32)")
    if tdtype == torch.float16 and not on_gpu:
        logger('note: fp16 convolutions are slow or unsupported on CPU; '
               'bf16 is the CPU half-precision option')
    gen = torch.Generator().manual_seed(0)
    x32 = torch.randn(batch_size, 3, *shape, generator=gen)
    x = x32.to(dev, tdtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16
                                       if dev.type == 'cpu' else
                                       torch.float16)) if amp else nullcontext

    # --- build, fuse, check --------------------------------------------
    tmp_dir = tempfile.mkdtemp(prefix='repseg_bench_')
    runs = []   # (row, label, callable)
    rows = []
    for entry in entries:
        t0 = time.time()
        unfused = build_for_benchmark(entry['config'],
                                      entry.get('checkpoint'), fast,
                                      entry.get('cfg_options'))
        if compare_unfused and not find_unfused(unfused):
            raise UsageError(
                f"{entry['name']}: the config builds an already fused "
                '(deploy) model, so there is no unfused form to compare '
                'with. Benchmark the training config (with its training '
                'checkpoint) to compare fused and unfused.')
        fused = reparameterize_model(unfused, inplace=not compare_unfused)
        assert_fused(fused)
        backbone = getattr(fused, 'backbone', None)
        row = dict(
            name=entry['name'], config=entry['config'],
            baseline=entry.get('baseline'),
            paper_miou=entry.get('paper_miou'),
            paper_speed=entry.get('paper_speed'),
            dilation_mode=getattr(backbone, 'dilation_mode', None),
            decoder=type(getattr(fused, 'decode_head', fused)).__name__,
            params_m=sum(p.numel() for p in fused.parameters()) / 1e6)
        if flops:
            row['gflops'] = count_gflops(SegForward(fused), x32[:1].to(dev))
        native_fwd = None
        if compare_conv_impl:
            native_fwd = SegForward(
                _prepare(copy.deepcopy(fused), dev, tdtype, channels_last))
        fused_fwd = SegForward(_prepare(
            use_fast_convs(fused, conv_impl, inplace=True), dev, tdtype,
            channels_last))
        row['fast_convs'], row['convs'] = count_fast_convs(fused)
        if compare_unfused:
            unfused_fwd = SegForward(_prepare(
                use_fast_convs(unfused, conv_impl, inplace=True), dev, tdtype,
                channels_last))
            with torch.no_grad(), autocast():
                a, b = unfused_fwd(x[:1]), fused_fwd(x[:1])
            row['max_abs_diff'] = (a.float() - b.float()).abs().max().item()
            row['max_abs_logit'] = a.float().abs().max().item()
        fwd = torch.compile(fused_fwd) if compile else fused_fwd
        runs.append((row, 'fused', fwd))
        if native_fwd is not None:
            with torch.no_grad(), autocast():
                a, b = native_fwd(x[:1]), fused_fwd(x[:1])
            row['native_max_abs_diff'] = (a.float() -
                                          b.float()).abs().max().item()
            runs.append((row, 'native',
                         torch.compile(native_fwd) if compile else native_fwd))
        if backend == 'onnxruntime':
            runs.append((row, 'onnxruntime',
                         _ort_callable(fused_fwd, x, tmp_dir, row)))
        if compare_unfused:
            ufwd = torch.compile(unfused_fwd) if compile else unfused_fwd
            runs.append((row, 'unfused', ufwd))
        rows.append(row)
        logger(f"built {row['name']} ({row['params_m']:.2f} M params fused, "
               f"{row['fast_convs']}/{row['convs']} convs on NNPACK) in "
               f'{time.time() - t0:.1f} s')

    # --- warm up, memory ---------------------------------------------------
    def call(fn):
        with torch.no_grad(), autocast():
            out = fn(x)
        _sync(dev)
        return out

    for row, label, fn in runs:
        for _ in range(warmup):
            call(fn)
        mem = peak_forward_memory(lambda inp: call(fn), x, dev)
        row[f'{label}_peak_mem_mib'] = None if mem is None else mem / 2**20
        if conv_impl == 'nnpack-precomputed' and isinstance(fn, nn.Module):
            # held between forwards, like the weights: not in the peak above
            row[f'{label}_kernel_transforms_mib'] = \
                kernel_transform_bytes(fn) / 2**20

    # --- timed rounds, interleaved -----------------------------------------
    times = {(id(row), label): [] for row, label, _ in runs}
    for r in range(repeat):
        for row, label, fn in runs:
            for _ in range(iters):
                _sync(dev)
                t = time.perf_counter()
                call(fn)
                times[(id(row), label)].append(time.perf_counter() - t)
        logger(f'round {r + 1}/{repeat} done')

    if profile:
        for row, label, fn in runs:
            with autocast():
                row[f'{label}_profile'] = profile_layers(
                    fn, x, sync=lambda: _sync(dev))
        logger('profiled every model by layer kind')

    for row, label, _ in runs:
        ts = times[(id(row), label)]
        per_img = sorted(t / batch_size for t in ts)
        q = statistics.quantiles(per_img, n=4) if len(per_img) > 1 else \
            [per_img[0]] * 3
        med = statistics.median(per_img)
        row[f'{label}_img_per_s'] = 1.0 / med
        row[f'{label}_latency_ms'] = med * 1e3
        row[f'{label}_latency_iqr_ms'] = (q[2] - q[0]) * 1e3
        row[f'{label}_latency_min_ms'] = per_img[0] * 1e3
    by_name = {row['name']: row for row in rows}
    for row in rows:
        base = by_name.get(row['baseline'])
        row['speed_vs_baseline'] = (row['fused_img_per_s'] /
                                    base['fused_img_per_s']) if base else None
        if compare_unfused:
            row['fused_speedup'] = (row['fused_img_per_s'] /
                                    row['unfused_img_per_s'])
        if compare_conv_impl:
            row['conv_impl_speedup'] = (row['fused_img_per_s'] /
                                        row['native_img_per_s'])
        if backend == 'onnxruntime':
            row['onnxruntime_vs_pytorch'] = (row['onnxruntime_img_per_s'] /
                                             row['fused_img_per_s'])
    shutil.rmtree(tmp_dir, ignore_errors=True)
    env = environment(dev, batch_size, dtype, dict(
        channels_last=channels_last, compile=compile, amp=amp))
    env.update(shape=list(shape), warmup=warmup, iters=iters, repeat=repeat,
               fast=fast, backend=backend, conv_impl=conv_impl,
               timing='interleaved rounds; latency = per image, median and '
               'interquartile range over all timed batches')
    return dict(env=env, rows=rows)


def _fmt(v, spec='.2f'):
    return '-' if v is None else format(v, spec)


def markdown_table(result: dict) -> str:
    rows = result['rows']
    unf = any('unfused_img_per_s' in r for r in rows)
    ort = any('onnxruntime_img_per_s' in r for r in rows)
    nat = any('native_img_per_s' in r for r in rows)
    head = ['model', 'dilation', 'img/s', 'latency ms (median ± IQR)',
            'params M', 'GFLOPs', 'peak fwd mem MiB', 'vs ResNet']
    if unf:
        head += ['unfused img/s', 'fused/unfused',
                 'max abs(fused-unfused) / max abs(logit)']
    if nat:
        head += ['native-conv img/s', 'nnpack/native']
    if ort:
        head += ['onnxruntime img/s', 'ort/pytorch',
                 'max abs(ort-pytorch) / max abs(logit)']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for r in rows:
        vs = (f"{r['speed_vs_baseline']:.2f}x {r['baseline']}"
              if r.get('speed_vs_baseline') else '-')
        cells = [r['name'], r['dilation_mode'] or '-',
                 _fmt(r['fused_img_per_s'], '.3f'),
                 f"{r['fused_latency_ms']:.0f} ± "
                 f"{r['fused_latency_iqr_ms']:.0f}",
                 _fmt(r['params_m']), _fmt(r.get('gflops'), '.1f'),
                 _fmt(r.get('fused_peak_mem_mib'), '.0f'), vs]
        if unf:
            cells += [_fmt(r.get('unfused_img_per_s'), '.3f'),
                      _fmt(r.get('fused_speedup')) + 'x',
                      _fmt(r['max_abs_diff'] / max(r['max_abs_logit'], 1e-12)
                           if r.get('max_abs_diff') is not None else None,
                           '.1e')]
        if nat:
            cells += [_fmt(r.get('native_img_per_s'), '.3f'),
                      _fmt(r.get('conv_impl_speedup')) + 'x']
        if ort:
            cells += [_fmt(r.get('onnxruntime_img_per_s'), '.3f'),
                      _fmt(r.get('onnxruntime_vs_pytorch')) + 'x',
                      _fmt(r['onnxruntime_max_abs_diff'] /
                           max(r['onnxruntime_max_abs_logit'], 1e-12)
                           if r.get('onnxruntime_max_abs_diff') is not None
                           else None, '.1e')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    e = result['env']
    lines.append('')
    lines.append(
        f"device {e['device']} ({e['device_name']}), {e['threads']} threads, "
        f"batch {e['batch']}, input {e['shape'][0]}x{e['shape'][1]}, "
        f"{e['dtype']}{' +amp' if e['amp'] else ''}"
        f"{', channels_last' if e['channels_last'] else ''}"
        f"{', torch.compile' if e['compile'] else ''}, warm-up "
        f"{e['warmup']}, {e['iters']} timed batches x {e['repeat']} "
        f"interleaved rounds, cudnn.benchmark={e['cudnn_benchmark']}; "
        f"torch {e['torch']}, mmcv {e['mmcv']}, mmseg {e['mmseg']}. "
        'All models fused (RepVGG blocks re-parameterized, conv-BN folded); '
        + ('3x3 stride-1 convs of every model on NNPACK Winograd '
           f"(--conv-impl {e['conv_impl']})."
           if is_nnpack(e.get('conv_impl', 'native')) else
           "PyTorch's native convolutions (--conv-impl native)."))
    return '\n'.join(lines)


def _profiles(result: dict) -> List[tuple]:
    """(row name, form label, profile) of every profiled run."""
    return [(r['name'], key[:-len('_profile')], r[key])
            for r in result['rows'] for key in r
            if key.endswith('_profile') and isinstance(r[key], dict)]


def _profile_columns(profiles: List[tuple], min_ms: float = 1.0
                     ) -> List[str]:
    """Layer kinds worth a column (at least ``min_ms`` somewhere), most
    time first; :data:`FUNCTIONAL` last."""
    peak = {}
    for _, _, prof in profiles:
        for kind, ms in prof['kinds'].items():
            if kind != FUNCTIONAL:
                peak[kind] = max(peak.get(kind, 0.0), ms)
    cols = sorted((k for k, v in peak.items() if v >= min_ms),
                  key=lambda k: -peak[k])
    return cols + ['other layers', FUNCTIONAL]


def _profile_cells(prof: dict, cols: List[str]) -> List[float]:
    named = set(cols)
    other = sum(ms for k, ms in prof['kinds'].items() if k not in named)
    return [other if c == 'other layers' else prof['kinds'].get(c, 0.0)
            for c in cols]


def profile_table(result: dict) -> Optional[str]:
    """Markdown table of the ``--profile`` results (ms of one forward by
    model part and by layer kind), or None if nothing was profiled."""
    profiles = _profiles(result)
    if not profiles:
        return None
    parts = [p for p in ('backbone', 'neck', 'decode_head', 'rest')
             if any(p in prof['parts'] for _, _, prof in profiles)]
    cols = _profile_columns(profiles)
    head = ['model', 'form', 'total ms'] + [f'{p} ms' for p in parts] + cols
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, label, prof in profiles:
        cells = [name, label, f"{prof['total_ms']:.0f}"]
        cells += [_fmt(prof['parts'].get(p), '.0f') for p in parts]
        cells += [f'{ms:.0f}' for ms in _profile_cells(prof, cols)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'ms of one forward after the timed rounds, by part and by '
              'layer kind (the forward of every leaf module timed; '
              f'"{FUNCTIONAL}" is the time outside them).']
    return '\n'.join(lines)


def _save_profile_png(result: dict, path: str) -> None:
    import matplotlib.pyplot as plt
    profiles = _profiles(result)
    cols = _profile_columns(profiles)
    labels = [f'{name} {label}' for name, label, _ in profiles]
    # tall enough for the bars and for the legend (one line per kind)
    fig, ax = plt.subplots(figsize=(11, max(1.2 + 0.45 * len(profiles),
                                            0.6 + 0.2 * len(cols))))
    cells = [_profile_cells(prof, cols) for _, _, prof in profiles]
    left = [0.0] * len(profiles)
    cmap = plt.get_cmap('tab20')
    for j, col in enumerate(cols):
        widths = [row[j] for row in cells]
        ax.barh(labels, widths, left=left, color=cmap(j % 20), label=col)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel('ms per forward (one forward, leaf modules timed)')
    ax.set_title('Where the time goes, by layer kind')
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_outputs(result: dict, out_dir: str) -> Dict[str, str]:
    """Write ``benchmark.json`` and ``benchmark.png`` (speed bars, and mIoU
    vs speed where the paper's mIoU is known) into ``out_dir``, and
    ``profile.png`` (time by layer kind) when the runs were profiled."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'benchmark.json')
    with open(json_path, 'w') as f:
        json.dump(result, f, indent=2)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    rows = result['rows']
    known = [r for r in rows if r.get('paper_miou')]
    fig, axes = plt.subplots(1, 2 if known else 1,
                             figsize=(13 if known else 7, 4.5))
    axes = list(axes) if known else [axes]
    names = [r['name'] for r in rows]
    speeds = [r['fused_img_per_s'] for r in rows]
    colors = ['tab:orange' if r['name'].startswith('ResNet') else 'tab:blue'
              for r in rows]
    unfused = [r.get('unfused_img_per_s') for r in rows]
    ax = axes[0]
    ax.barh(names, speeds, color=colors)
    handles = [Patch(color='tab:blue', label='RepVGG (fused)')]
    if any(n.startswith('ResNet') for n in names):
        handles.append(Patch(color='tab:orange',
                             label='ResNet (conv-BN folded)'))
    if any(u is not None for u in unfused):
        ax.barh(names, [u or 0 for u in unfused], color='none',
                edgecolor='k', hatch='//')
        handles.append(Patch(facecolor='none', edgecolor='k', hatch='//',
                             label='unfused (training form)'))
    ax.legend(handles=handles, fontsize=8, loc='lower right')
    ax.invert_yaxis()
    e = result['env']
    ax.set_xlabel(f"images / second ({e['device']}, batch {e['batch']}, "
                  f"{e['shape'][0]}x{e['shape'][1]}, {e['dtype']})")
    decoders = sorted({_DECODER_NAMES.get(r.get('decoder'), r.get('decoder'))
                       for r in rows if r.get('decoder')})
    ax.set_title(f"{' / '.join(decoders) or 'Segmentor'} inference speed "
                 '(fused)')
    for i, (s, u) in enumerate(zip(speeds, unfused)):
        label = f' {s:.3g}' + (f' (unfused {u:.3g})' if u else '')
        ax.text(s, i, label, va='center', fontsize=8)
    # room for the value labels right of the longest bar
    ax.set_xlim(0, 1.45 * max(speeds + [u or 0 for u in unfused]))
    if known:
        ax = axes[1]
        for r in known:
            c = 'tab:orange' if r['name'].startswith('ResNet') else 'tab:blue'
            ax.scatter(r['fused_img_per_s'], r['paper_miou'], color=c)
            ax.annotate(r['name'], (r['fused_img_per_s'], r['paper_miou']),
                        textcoords='offset points', xytext=(4, 4),
                        fontsize=8)
        ax.set_xlabel('images / second (measured here)')
        ax.set_ylabel('Cityscapes val mIoU (paper, Table 8)')
        ax.set_title('mIoU vs speed')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = osp.join(out_dir, 'benchmark.png')
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    files = dict(json=json_path, png=png_path)
    if _profiles(result):
        files['profile_png'] = osp.join(out_dir, 'profile.png')
        _save_profile_png(result, files['profile_png'])
    return files


__all__ = [
    'BenchmarkError', 'LINEUP', 'lineup', 'assert_fused', 'check_shape',
    'SegForward', 'build_for_benchmark', 'run_benchmark', 'markdown_table',
    'profile_table', 'save_outputs', 'peak_forward_memory', 'count_gflops'
]
