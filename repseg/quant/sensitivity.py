# Copyright (c) repseg contributors. All rights reserved.
"""Per-layer INT8 sensitivity: the error each convolution ALONE causes when
it is quantized the way both INT8 runtimes quantize it (weights symmetric
INT8 per output channel; its input per tensor: UINT8 over [0, max] after a
ReLU, else symmetric INT8, with the range seen on the calibration inputs),
everything else in float. The layers at the top of the list are where
INT8 accuracy goes."""
from typing import List, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..deploy.build import SegForward


def _fake_int8_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel INT8 rounding of a conv weight."""
    flat = w.detach().double().flatten(1)
    scale = (flat.abs().amax(1) / 127).clamp_min(1e-30)
    q = (flat / scale[:, None]).round().clamp(-127, 127) * scale[:, None]
    return q.reshape(w.shape).to(w.dtype)


def _fake_quant_input(x: torch.Tensor, low: float, high: float
                      ) -> torch.Tensor:
    """Per-tensor INT8 rounding of an activation with calibrated range
    [low, high]: UINT8 for non-negative ranges, symmetric INT8 else."""
    if low >= 0:
        step = max(high, 1e-30) / 255
        return (x / step).round().clamp(0, 255) * step
    step = max(abs(low), abs(high), 1e-30) / 127
    return (x / step).round().clamp(-127, 127) * step


@torch.no_grad()
def layer_sensitivity(model: nn.Module, inputs: Sequence[np.ndarray],
                      top: int = 10) -> List[dict]:
    """The ``top`` convolutions of the fused segmentor ``model`` whose INT8
    quantization alone changes its logits most on ``inputs`` (normalized
    (1, 3, H, W) arrays), most first: ``layer``, ``relative_error``
    (mean |INT8 - float| / mean |float| of the logits), ``argmax_agreement``
    with the float model. Convolutions the forward does not run (an
    auxiliary head) are not listed."""
    fwd = SegForward(model).eval()
    xs = [torch.as_tensor(x).float() for x in inputs]
    convs = {n: m for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d)}
    ranges = {}

    def observe(name):
        def hook(_, args):
            x = args[0]
            lo, hi = float(x.min()), float(x.max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(old[0], lo), max(old[1], hi))
        return hook

    handles = [m.register_forward_pre_hook(observe(n))
               for n, m in convs.items()]
    try:
        refs = [fwd(x) for x in xs]
    finally:
        for h in handles:
            h.remove()
    found = []
    for name, conv in convs.items():
        if name not in ranges:
            continue
        low, high = ranges[name]
        weight = conv.weight.data.clone()
        conv.weight.data.copy_(_fake_int8_weight(weight))
        handle = conv.register_forward_pre_hook(
            lambda _, args, lo=low, hi=high: (
                _fake_quant_input(args[0], lo, hi), ) + tuple(args[1:]))
        try:
            errs, agree = [], []
            for x, ref in zip(xs, refs):
                out = fwd(x)
                errs.append(float((out - ref).abs().mean() /
                                  ref.abs().mean().clamp_min(1e-30)))
                agree.append(float(
                    (out.argmax(1) == ref.argmax(1)).float().mean()))
        finally:
            handle.remove()
            conv.weight.data.copy_(weight)
        found.append(dict(layer=name, relative_error=float(np.mean(errs)),
                          argmax_agreement=float(np.mean(agree))))
    found.sort(key=lambda r: -r['relative_error'])
    return found[:top]


def sensitivity_table(rows: List[dict]) -> List[str]:
    """Markdown lines of :func:`layer_sensitivity`'s result."""
    if not rows:
        return []
    lines = ['', 'Layers whose INT8 quantization alone costs most (weights '
             'per channel + input per tensor, the rest in float):', '',
             '| layer | logits relative error | argmax agreement with '
             'float |', '|---|---|---|']
    lines += [f"| {r['layer']} | {100 * r['relative_error']:.2f}% | "
              f"{100 * r['argmax_agreement']:.2f}% |" for r in rows]
    return lines


__all__ = ['layer_sensitivity', 'sensitivity_table']
