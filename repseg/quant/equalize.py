# Copyright (c) repseg contributors. All rights reserved.
"""Repair of a fused model before INT8: RepVGG's outlier taps removed by
channel equalization informed by calibration statistics.

RepVGG's INT8 failure mode: an input channel that is (nearly) dead after
the previous ReLU gets an identity-BN scale in the hundreds, i.e. a huge
centre tap in the fused kernel; per-channel INT8 then rounds every other
weight of that output channel to zero. :func:`equalize_` rescales every
``conv -> ReLU -> conv`` pair (:func:`repseg.reparam.equalize.relu_pairs`)
exactly, with the scales of one of two methods:

* ``'activation'`` (activation-aware): ``s_c = a_c / max(a)`` with ``a_c``
  the largest value channel ``c`` takes after the ReLU on the calibration
  inputs, for the input channels of conv2 whose largest tap stands out
  (above :data:`OUTLIER_FACTOR` times the median channel's; the others
  keep 1): such a channel then fills the activation range and its taps
  shrink in proportion to how little it fires, so a tap on a near-dead
  channel no longer sets its output channel's INT8 scale (it weighs
  ``|w| * a_c``, what it contributes);
* ``'cle'``: plain cross-layer equalization (weights only, Nagel et al.).

A channel that never fires on the calibration set (``a_c == 0``) keeps
scale 1 and its taps in conv2 are cleared: exact for every input on which
it stays dead (a huge rescaling instead would be exact everywhere in
float but wrecks INT8: the channel's bias, divided by a tiny scale,
overflows the runtimes' int32 bias when its weights are zero); such
channels are counted in the report. The algebra is
:mod:`repseg.reparam.equalize`; this module holds the statistics and the
choice.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import UsageError, opt
from ..reparam.equalize import (clear_input_channels_, cle_scales,
                                input_channel_ranges, outlier_ratio,
                                relu_pairs, rescale_pair_)
from ..deploy.build import SegForward

#: equalization methods of :func:`equalize_` (``'off'``: none)
METHODS = ('off', 'activation', 'cle')
#: the smallest activation-aware scale: a channel firing at 1e-4 of the
#: tensor's range is scaled up 1000x, not 10000x (its taps still shrink
#: 1000x), so an input that fires it more than calibration did is not
#: clipped far out of range
MIN_SCALE = 1e-3
#: activation-aware scales only for input channels whose largest tap in
#: the second conv is above this many times the median channel's: a healthy
#: trained model is left as it is (rescaling every channel moved its INT8
#: pixels by up to 0.4 points of agreement either way on the demo's A0
#: pair), planted / RepVGG identity outliers are far above it
OUTLIER_FACTOR = 4.0


def check_equalize(method: str) -> None:
    """Refuse an equalization method that is not one of :data:`METHODS`
    (checked before anything long runs)."""
    if method not in METHODS:
        raise UsageError(f'{opt("equalize", method)} is not a method: '
                         f'choose one of {", ".join(METHODS)}')


def model_pairs(model: nn.Module) -> list:
    """The ``conv -> ReLU -> conv`` pairs of a segmentor's parts (the
    backbone, a neck, the decode head: whatever ``torch.fx`` can trace;
    RepVGG's stages always can)."""
    pairs = []
    for part in ('backbone', 'neck', 'decode_head'):
        module = getattr(model, part, None)
        if isinstance(module, nn.Module):
            pairs += relu_pairs(module, f'{part}.')
    return pairs


@torch.no_grad()
def activation_ranges(model: nn.Module, modules: Dict[str, nn.Module],
                      inputs: Sequence[np.ndarray]) -> Dict[str, torch.Tensor]:
    """Per output channel of each of ``modules`` (name -> module of
    ``model``): the largest value after a ReLU (``max(0, out)``) over the
    normalized ``inputs`` (float64)."""
    ranges = {}

    def hook(name):
        def record(_, __, out):
            m = out.detach().double().clamp_min(0).amax(dim=(0, 2, 3))
            ranges[name] = torch.maximum(ranges[name], m) \
                if name in ranges else m
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        fwd = SegForward(model)
        for x in inputs:
            fwd(torch.as_tensor(x).float())
    finally:
        for h in handles:
            h.remove()
    return ranges


@torch.no_grad()
def equalize_(model: nn.Module, inputs: Sequence[np.ndarray],
              method: str = 'activation',
              min_scale: float = MIN_SCALE,
              outlier_factor: Optional[float] = OUTLIER_FACTOR) -> dict:
    """Equalize the fused segmentor ``model`` in place for INT8 (see the
    module's text), with the calibration ``inputs`` (normalized
    (1, 3, H, W) arrays); ``outlier_factor=None`` rescales every channel
    (activation-aware method).

    Returns the report: ``method``, ``pairs``, ``through_se`` (pairs
    with a squeeze-and-excitation between), ``rescaled`` (channels
    whose scale is not 1), ``cleared`` (channels that never fire on the
    calibration set: their taps in the second conv cleared),
    ``outlier_ratio_before`` / ``_after`` (the largest per-channel
    max |w| / median |w| over the second convs of the pairs).
    """
    check_equalize(method)
    pairs = model_pairs(model) if method != 'off' else []
    # per second conv: its largest outlier ratio; only the convs whose
    # input channels change are measured again (scaling a conv's OUTPUT
    # channels, as the next pair does, leaves its ratios as they are)
    ratios = {id(p[3]): float(outlier_ratio(p[3]).max()) for p in pairs}
    report = dict(method=method, pairs=len(pairs), rescaled=0, cleared=0,
                  through_se=sum(1 for p in pairs if p.through),
                  outlier_ratio_before=max(ratios.values(), default=None))
    if pairs:
        ranges = activation_ranges(model, {p[0]: p[1] for p in pairs},
                                   inputs)
        for pair in pairs:
            name1, conv1, _, conv2 = pair
            a = ranges.get(name1)
            if a is None:          # not on the inference path (aux head)
                continue
            dead = a <= 0
            if method == 'cle':
                scale = cle_scales(conv1, conv2)
            else:
                scale = (a / a.max().clamp_min(1e-30)).clamp(min_scale, 1.0)
                if outlier_factor is not None:
                    # only the channels whose taps stand out
                    r2 = input_channel_ranges(conv2)
                    typical = r2[~dead].median() if bool((~dead).any()) \
                        else r2.median()
                    scale[r2 <= outlier_factor * typical] = 1.0
            scale[dead] = 1.0
            rescaled, cleared = int((scale != 1).sum()), int(dead.sum())
            if not rescaled and not cleared:
                continue
            clear_input_channels_(conv2, dead.nonzero().flatten().tolist())
            rescale_pair_(conv1, conv2, scale, pair.through)
            ratios[id(conv2)] = float(outlier_ratio(conv2).max())
            report['rescaled'] += rescaled
            report['cleared'] += cleared
    report['outlier_ratio_after'] = max(ratios.values(), default=None)
    return report


def equalization_lines(report: dict) -> List[str]:
    """The report of :func:`equalize_` in words (quantize.md)."""
    if report['method'] == 'off':
        return ['Equalization: off.']
    before, after = report['outlier_ratio_before'], \
        report['outlier_ratio_after']
    ratio = (f'; largest per-channel max|w| / median|w| of the second convs '
             f'{before:.0f} before, {after:.0f} after') if before else ''
    se = report.get('through_se')
    se = (f" ({se} of them with a squeeze-and-excitation between, its "
          'squeeze conv rescaled with the second conv: exact)') if se else ''
    return [f"Equalization ({report['method']}): {report['pairs']} "
            f"conv -> ReLU -> conv pairs{se}, {report['rescaled']} channels "
            f"rescaled, {report['cleared']} channels that never fire on the "
            f'calibration set cleared{ratio}.']


__all__ = ['METHODS', 'MIN_SCALE', 'check_equalize', 'model_pairs',
           'activation_ranges', 'equalize_', 'equalization_lines']
