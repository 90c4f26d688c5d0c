# Copyright (c) repseg contributors. All rights reserved.
"""Export of the fused segmentor: ONNX (:func:`to_onnx`, any fixed input
size or a dynamic H/W; PSPNet's adaptive pooling exactly), then the file of
the runtime asked for (ONNX itself for ONNX Runtime, IR for OpenVINO, see
:mod:`repseg.deploy.runtimes`), verified against PyTorch in that runtime
(:func:`export_model`)."""
import copy
import dataclasses
import json
import os
import os.path as osp
import tempfile
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.config import Config

from ..errors import UsageError, opt
from ..reparam import compare_outputs
from ..settings import Settings
from .build import (MIN_SIDE, SegForward, build_fused, check_input_size,
                    dataset_meta, refuse_overwrite)
from .record import (RECORD_KEY, checkpoint_block_type,
                     config_input_size, model_record, record_of)
from .runtimes import DEFAULT_RUNTIME, get_runtime


def _pool_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """(out, size) matrix whose row i averages the input bin
    [floor(i * size / out), ceil((i + 1) * size / out)) of adaptive average
    pooling."""
    m = torch.zeros(out, size, dtype=like.dtype, device=like.device)
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class FixedAdaptiveAvgPool2d(torch.nn.Module):
    """``nn.AdaptiveAvgPool2d`` computed as ``P_h @ x @ P_w^T`` with the
    bin-averaging matrices of the input size: the same bins and values, but
    exportable to ONNX at ANY fixed input size (ONNX's pooling operators
    have one kernel size, adaptive bins of unequal sizes have several, so
    torch exports adaptive pooling only when every output size divides the
    input size). Where every bin has the same size (the output size
    divides the input size, e.g. PSPNet's 1/2/3/6 bins of a 90x90 map at
    713x713) it is one plain average pooling. Used for export only: the
    matrices are built from the traced input size, so the exported graph
    has a fixed H and W."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = ((self.output_size, ) * 2 if isinstance(
            self.output_size, int) else tuple(self.output_size))
        oh, ow = oh or h, ow or w
        if h % oh == 0 and w % ow == 0:
            # equal bins: one plain average pooling (ONNX AveragePool, which
            # INT8 runs quantized, unlike the matrix products)
            return F.avg_pool2d(x, (h // oh, w // ow))
        return torch.matmul(torch.matmul(_pool_matrix(h, oh, x), x),
                            _pool_matrix(w, ow, x).t())


def _bin_matrix(size, out: int, like: torch.Tensor) -> torch.Tensor:
    """The (out, size) bin-averaging matrix of :func:`_pool_matrix` made of
    tensor ops on ``size`` (an int, or the 0-dim tensor ``x.shape[i]`` is
    while the exporter traces): the exported graph computes the bins from
    the input's shape (Shape, Range, integer Div, comparisons), so one
    file pools exactly at any input size. Row i averages
    [floor(i * size / out), ceil((i + 1) * size / out))."""
    i = torch.arange(out, dtype=torch.int64, device=like.device)
    start = torch.div(i * size, out, rounding_mode='floor')
    end = torch.div((i + 1) * size + (out - 1), out, rounding_mode='floor')
    j = torch.arange(size, dtype=torch.int64, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


class DynamicAdaptiveAvgPool2d(torch.nn.Module):
    """``nn.AdaptiveAvgPool2d`` computed as ``P_h @ x @ P_w^T`` with
    bin-averaging matrices built from the input's actual shape by tensor
    ops (:func:`_bin_matrix`): the same bins and values at every size, and
    an ONNX export with a dynamic H and W computes them in the graph
    (ONNX's pooling operators have one kernel size; adaptive bins of
    unequal sizes have several). Unlike :class:`FixedAdaptiveAvgPool2d` it
    never takes the plain-pooling path of equal bins (whether the bins are
    equal depends on the size)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # while tracing, x.shape[i] is a 0-dim tensor the graph computes
        h, w = x.shape[-2], x.shape[-1]
        oh, ow = ((self.output_size, ) * 2 if isinstance(
            self.output_size, int) else tuple(self.output_size))
        if oh is not None:   # None: that axis keeps its size
            x = torch.matmul(_bin_matrix(h, oh, x), x)
        if ow is not None:
            x = torch.matmul(x, _bin_matrix(w, ow, x).t())
        return x


def _adaptive_pools(module: torch.nn.Module) -> list:
    """(parent, name, pool) of every adaptive average pooling whose output
    is larger than 1x1 (1x1 exports as GlobalAveragePool at any size)."""
    found = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.AdaptiveAvgPool2d):
                size = child.output_size
                sizes = (size, ) * 2 if isinstance(size, int) else size
                if any(s != 1 for s in sizes):
                    found.append((parent, name, child))
    return found


def exportable(module: torch.nn.Module,
               dynamic_shape: bool = False) -> torch.nn.Module:
    """A copy of ``module`` in which adaptive average pooling is replaced by
    :class:`FixedAdaptiveAvgPool2d` (same outputs), for a fixed-size ONNX
    export, or with ``dynamic_shape`` by :class:`DynamicAdaptiveAvgPool2d`
    (the bins computed from the input's shape in the graph); ``module``
    itself when it has none."""
    if not _adaptive_pools(module):
        return module
    pool_type = (DynamicAdaptiveAvgPool2d if dynamic_shape else
                 FixedAdaptiveAvgPool2d)
    module = copy.deepcopy(module)
    for parent, name, pool in _adaptive_pools(module):
        setattr(parent, name, pool_type(pool.output_size))
    return module


def to_onnx(module: torch.nn.Module, x: torch.Tensor, out: str,
            opset: int = 17, dynamic_shape: bool = False,
            record: Optional[dict] = None) -> str:
    """``torch.onnx.export`` of ``module(x)`` (input 'image', output
    'logits', dynamic batch; dynamic H/W with ``dynamic_shape``), written
    atomically to ``out``; ``record`` (:func:`~.record.model_record`) is
    stored in the file's metadata.

    Adaptive average pooling (PSPNet's pyramid) is exported exactly:
    for the size of ``x``, or with ``dynamic_shape`` for every size, its
    bins computed from the input's shape in the graph (:func:`exportable`).
    The exporter's messages go to ``out + '.log'``, not to the screen.
    """
    axes = {0: 'batch'}
    if dynamic_shape:
        axes.update({2: 'height', 3: 'width'})
    module = exportable(module, dynamic_shape)
    os.makedirs(osp.dirname(osp.abspath(out)) or '.', exist_ok=True)
    tmp, log = out + '.tmp', out + '.log'
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.onnx.export(
                module, (x, ), tmp, input_names=['image'],
                output_names=['logits'], opset_version=opset,
                dynamic_axes={'image': axes, 'logits': dict(axes)},
                do_constant_folding=True, dynamo=False)
    except Exception as e:  # noqa: B902
        if osp.exists(tmp):
            os.remove(tmp)
        with open(log, 'w') as f:
            f.write(f'{type(e).__name__}: {e}\n')
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise UsageError(
            f'ONNX export failed for input size {tuple(x.shape[-2:])}'
            f"{' with dynamic H/W' if dynamic_shape else ''}: "
            f'{type(e).__name__}: {first[:300]} (the exporter\'s full '
            f'message is in {log}).') from None
    with open(log, 'w') as f:
        f.writelines(f'{w.category.__name__}: {w.message}\n' for w in caught)
    if record is not None:
        import onnx
        proto = onnx.load(tmp)
        entry = proto.metadata_props.add()
        entry.key, entry.value = RECORD_KEY, json.dumps(record)
        onnx.save(proto, tmp)
    os.replace(tmp, out)
    return out


def input_spec(cfg: Config, input_size: Sequence[int],
               dynamic_shape: bool = False) -> dict:
    """What the exported model is (``model``: its record, see
    :mod:`repseg.deploy.record`), expects and returns, from the config's
    model, data preprocessor and dataset (written next to the model
    file; ``input.height_width`` is the input size)."""
    pre = cfg.model.get('data_preprocessor') or {}
    rgb = bool(pre.get('bgr_to_rgb', False) or pre.get('rgb_to_bgr', False))
    meta = dataset_meta(cfg)
    classes = meta['classes'] if meta else None
    hw = 'any' if dynamic_shape else [int(s) for s in input_size]
    return dict(
        model=model_record(cfg, None if dynamic_shape else input_size),
        input=dict(
            name='image', dtype='float32', layout='NCHW',
            channel_order='RGB' if rgb else 'BGR',
            height_width=hw, batch='any',
            normalization='(pixel - mean) / std per channel, pixels in '
            '0..255 in the channel order above',
            mean=[float(v) for v in pre.get('mean', [0, 0, 0])],
            std=[float(v) for v in pre.get('std', [1, 1, 1])]),
        output=dict(
            name='logits', dtype='float32', layout='NCHW',
            shape=['N', 'num_classes', 'H', 'W'],
            meaning='per-class scores at input resolution; argmax over '
            'axis 1 is the label map', classes=classes))


def _check_output(runtime, out: str, force: bool) -> str:
    """Refuse an output ``runtime`` cannot write (another suffix, a folder,
    files that exist without ``force``); returns its ``.json``'s path."""
    runtime.require()
    if not out.lower().endswith(runtime.suffix):
        raise UsageError(
            f'{runtime.label} models are {runtime.suffix} files: name the '
            f'output NAME{runtime.suffix} (got {out!r}) or choose another '
            f'{opt("backend", None)}')
    if osp.isdir(out):
        raise UsageError(f'the output {out!r} is a folder; give a file name '
                         f'ending in {runtime.suffix}')
    spec_path = osp.splitext(out)[0] + '.json'
    refuse_overwrite(runtime.files(out) + [spec_path], force)
    return spec_path


@dataclasses.dataclass
class ExportSettings(Settings):
    """How to export (one field per option of tools/export.py).

    Args:
        backend (str): the runtime whose file is written (its suffix names
            the output; default: the portable one).
        input_size (sequence of int or None): (H, W), or one side; default:
            the size the config's test loop runs
            (:func:`~.record.config_input_size`).
        dynamic_shape (bool or None): H and W dynamic too (the batch axis
            always is): one file that computes what the config computes at
            any input size (adaptive pooling bins computed from the input's
            shape in the graph); verified at the export size and at
            :func:`other_size`. None (default): :func:`dynamic_by_default`
            (dynamic for a whole-image config, fixed for a sliding-window
            one).
        opset (int): the ONNX opset.
        force (bool): overwrite the output and its companion files.
        verify (bool): run the file in its runtime (fp32) on a random input
            and compare with PyTorch.
        allow_unsafe (bool): full unpickling of the checkpoint (only for
            files you trust).
    """
    backend: str = DEFAULT_RUNTIME
    input_size: Optional[Sequence[int]] = None
    dynamic_shape: Optional[bool] = None
    opset: int = 17
    force: bool = False
    verify: bool = True
    allow_unsafe: bool = False


def export_model(cfg: Config,
                 checkpoint: Optional[str],
                 out: str,
                 settings: Optional[ExportSettings] = None,
                 model: Optional[torch.nn.Module] = None) -> dict:
    """Export the fused segmentor (input ``(N, 3, H, W)`` normalized image,
    output logits ``(N, num_classes, H, W)``) to ONNX, then to ``out``, the
    model file of the runtime ``settings.backend``
    (:meth:`~.runtimes.Runtime.from_onnx`: the ONNX file itself for ONNX
    Runtime, ``OUT.xml`` + ``OUT.bin`` for OpenVINO), with ``OUT.json``
    describing its input and output; the file records what it is
    (:func:`~.record.model_record`). With ``settings.verify`` the result
    holds :func:`repseg.reparam.compare_outputs`'s fields and ``runtime``
    (the :class:`~.runtimes.RunInfo` of what ran). ``model``: an already
    built fused segmentor to export instead of building one from ``cfg``
    and ``checkpoint``.
    """
    if settings is not None and not isinstance(settings, ExportSettings):
        raise TypeError('export_model() takes ExportSettings(...) as its '
                        f'settings, not {type(settings).__name__}')
    s = dataclasses.replace(settings or ExportSettings())
    runtime = get_runtime(s.backend)
    spec_path = _check_output(runtime, out, s.force)
    s.dynamic_shape = dynamic_by_default(cfg, s.dynamic_shape)
    size = check_input_size(s.input_size) if s.input_size is not None else None
    # checkpoint problems first, then the size from the data
    model = SegForward(model if model is not None else
                       build_fused(cfg, checkpoint, s.allow_unsafe))
    size = check_input_size(config_input_size(cfg)) if size is None else size
    record = checkpoint_block_type(
        record_of(cfg, None if s.dynamic_shape else size),
        checkpoint).to_dict()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)   # the temporary folder goes in it
    with tempfile.TemporaryDirectory(prefix='repseg_export_',
                                     dir=folder) as t:
        onnx_path = osp.join(t, 'model.onnx')
        to_onnx(model, x, onnx_path, s.opset, s.dynamic_shape, record)
        runtime.from_onnx(onnx_path, out)
    with open(spec_path, 'w') as f:
        json.dump(input_spec(cfg, size, s.dynamic_shape), f, indent=2)
    result = dict(out=out, backend=runtime.name, files=runtime.files(out),
                  bytes=sum(osp.getsize(p) for p in runtime.files(out)),
                  input_size=list(size), dynamic_shape=s.dynamic_shape,
                  spec=spec_path)
    if s.verify:
        inputs = [x]
        if s.dynamic_shape:   # and at a size it was not traced at
            inputs.append(torch.randn(
                1, 3, *other_size(size),
                generator=torch.Generator().manual_seed(1)))
        with torch.no_grad():
            refs = [model(i) for i in inputs]
        loaded = runtime.load(out, 'fp32', threads=torch.get_num_threads())
        result.update(compare_outputs(refs, [
            torch.from_numpy(loaded(i.numpy())) for i in inputs]),
            runtime=loaded.info,
            verify_sizes=[list(i.shape[-2:]) for i in inputs])
    return result


def dynamic_by_default(cfg: Config, dynamic_shape: Optional[bool]) -> bool:
    """Whether an export of ``cfg`` takes any input size: ``dynamic_shape``
    when given, else True for a whole-image config (each image runs at the
    size its test resize gives it, which differs between photos of other
    shapes: only a dynamic file computes them exactly) and False for a
    sliding-window one (its windows all have the crop size). Dynamic files
    are as fast as fixed ones at the fixed file's size (0.96-1.04x, both
    runtimes, fp32 and INT8, B1g2 at 713x713 and A0 at 128x256, 1 and 2
    threads: docs/inference.md), hence the default."""
    if dynamic_shape is not None:
        return bool(dynamic_shape)
    test_cfg = cfg.model.get('test_cfg') or {}
    return test_cfg.get('mode', 'whole') != 'slide'


def other_size(size: Sequence[int]) -> tuple:
    """A size (H, W) unlike ``size``, at which a dynamic-shape export is
    verified too: H about 3/4 and W about 5/4 of it, odd sides (adaptive
    bins of unequal sizes, pooling and resizes at a ratio not traced)."""
    h, w = (int(s) for s in size)
    return max(MIN_SIDE + 1, h * 3 // 4) | 1, (w * 5 // 4 + 1) | 1
