# Copyright (c) repseg contributors. All rights reserved.
"""ONNX export of the fused segmentor, checked with onnx's checker and run
with onnxruntime against PyTorch (onnx/onnxruntime are optional extras:
``pip install repseg[onnx]``)."""
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config

from ..benchmark import SegForward, assert_fused, check_shape
from ..reparam import reparameterize_model
from .convert import build_segmentor
from .runner import UsageError, adapt_to_device, load_any_checkpoint


def _require(name: str):
    try:
        return __import__(name)
    except ImportError as e:
        raise UsageError(
            f'ONNX export needs the optional package {name!r}: pip install '
            f'"repseg[onnx]" (or pip install onnx onnxruntime)') from e


def build_fused(cfg: Config, checkpoint: Optional[str]) -> torch.nn.Module:
    """The fused segmentor of ``cfg`` with the weights of ``checkpoint``
    (training or fused), in eval mode."""
    cfg = adapt_to_device(cfg)
    model = build_segmentor(cfg)
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise UsageError(f'checkpoint {checkpoint!r} does not exist')
        load_any_checkpoint(model, checkpoint)
    fused = reparameterize_model(model, inplace=True)
    assert_fused(fused)
    return fused.eval()


def to_onnx(module: torch.nn.Module, x: torch.Tensor, out: str,
            opset: int = 17, dynamic_shape: bool = False) -> str:
    """``torch.onnx.export`` of ``module(x)`` (input 'image', output
    'logits', dynamic batch; dynamic H/W with ``dynamic_shape``), written
    atomically to ``out``."""
    axes = {0: 'batch'}
    if dynamic_shape:
        axes.update({2: 'height', 3: 'width'})
    os.makedirs(osp.dirname(osp.abspath(out)) or '.', exist_ok=True)
    tmp = out + '.tmp'
    try:
        torch.onnx.export(
            module, (x, ), tmp, input_names=['image'],
            output_names=['logits'], opset_version=opset,
            dynamic_axes={'image': axes, 'logits': dict(axes)},
            do_constant_folding=True, dynamo=False)
    except Exception as e:  # noqa: B902
        if osp.exists(tmp):
            os.remove(tmp)
        raise UsageError(
            f'ONNX export failed for input size {tuple(x.shape[-2:])}'
            f"{' with dynamic H/W' if dynamic_shape else ''}: {e}. PSPNet's "
            'adaptive pooling exports only when the feature size is a '
            'multiple of every pool scale; use a fixed size such as 713x713 '
            'or 512x1024.') from e
    os.replace(tmp, out)
    return out


def export_onnx(cfg: Config,
                checkpoint: Optional[str],
                out: str,
                shape: Sequence[int] = (713, 713),
                dynamic_shape: bool = False,
                opset: int = 17,
                force: bool = False,
                verify: bool = True) -> dict:
    """Export the fused segmentor (input ``(N, 3, H, W)`` normalized image,
    output logits ``(N, num_classes, H, W)``) to ``out``.

    The batch axis is always dynamic; ``dynamic_shape`` also makes H and W
    dynamic. Returns a dict with the max |onnxruntime - PyTorch| on a random
    input of ``shape`` (when ``verify``).
    """
    onnx = _require('onnx')
    shape = check_shape(shape)
    if osp.exists(out) and not force:
        raise UsageError(f'{out!r} exists; pass --force to overwrite it')
    model = SegForward(build_fused(cfg, checkpoint))
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    axes = {0: 'batch'}
    if dynamic_shape:
        axes.update({2: 'height', 3: 'width'})
    to_onnx(model, x, out, opset, dynamic_shape)
    onnx.checker.check_model(onnx.load(out))
    result = dict(out=out, bytes=osp.getsize(out), shape=list(shape))
    if verify:
        ort = _require('onnxruntime')
        sess = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {'image': x.numpy()})[0]
        result.update(
            max_abs_diff=float(np.abs(ref - got).max()),
            max_abs=float(np.abs(ref).max()),
            argmax_agreement=float((ref.argmax(1) == got.argmax(1)).mean()))
    return result
