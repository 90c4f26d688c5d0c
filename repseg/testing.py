# Copyright (c) repseg contributors. All rights reserved.
"""Helpers for checking re-parameterization, shared by the test-suite, the
tools and users' own checks."""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .reparam.fusion import is_batchnorm
from .reparam.verify import compare_outputs


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0,
                  gain: float = 1.0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters
    (in place), so that fusion is tested away from the trivial
    mean=0 / var=1 / gamma=1 / beta=0 point. ``gain`` scales every gamma:
    a deep random network (RepVGG-D2se's 48 blocks with SE) is chaotic at
    1 (float32 rounding grows to O(1) differences between two exact forms
    of it), not at 0.8. Returns ``model``."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if is_batchnorm(m):
            n = m.num_features

            def rand(lo, hi):
                return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(
                    m.running_mean)

            m.running_mean.copy_(rand(-0.5, 0.5))
            m.running_var.copy_(rand(0.5, 2.0))
            if m.weight is not None:
                m.weight.copy_(rand(0.5, 1.5) * gain)
                m.bias.copy_(rand(-0.3, 0.3))
    return model


def max_rel_diff(a, b) -> float:
    """max |a - b| / max |a| over (nested tuples/lists of) tensors, per
    tensor (the largest of the ratios)."""
    if isinstance(a, (tuple, list)):
        return max(max_rel_diff(x, y) for x, y in zip(a, b))
    return compare_outputs(a, b)['relative']


@torch.no_grad()
def plant_dead_channels_(model: nn.Module, per_pair: int = 4,
                         tap: Optional[float] = 200.0, seed: int = 0,
                         parts: Tuple[str, ...] = ('stage_2', 'stage_3'),
                         alive: float = 0.0) -> int:
    """Plant RepVGG's INT8 failure mode in a FUSED model, in place, without
    changing what it computes: in each ``conv -> ReLU -> conv`` pair of the
    backbone stages ``parts`` whose second conv has an identity tap (same
    channels in and out), ``per_pair`` channels of the first conv are made
    dead (zero weights, bias -1: the ReLU gives 0 for every input) and the
    second conv's centre tap from each such channel to itself is set to
    ``tap``, as an identity BN with a huge scale leaves it (``tap=None``:
    the same dead channels without the taps, the model to compare with;
    both compute the same function). ``alive > 0`` makes the channels
    near-dead instead: their weights and bias scaled by ``alive`` (they
    fire, weakly; the taps then change the output a little). Returns the
    number of planted channels."""
    from .reparam.equalize import relu_pairs
    gen = torch.Generator().manual_seed(seed)
    planted = 0
    for name1, conv1, _, conv2 in relu_pairs(model.backbone):
        if not name1.startswith(parts) or \
                conv2.in_channels != conv2.out_channels:
            continue
        per_group = conv2.in_channels // conv2.groups
        kh, kw = conv2.kernel_size
        for c in torch.randperm(conv1.out_channels,
                                generator=gen)[:per_pair].tolist():
            if alive:
                conv1.weight[c] *= alive
                conv1.bias[c] *= alive
            else:
                conv1.weight[c] = 0
                conv1.bias[c] = -1.0
            if tap is not None:
                conv2.weight[c, c % per_group, kh // 2, kw // 2] = tap
            planted += 1
    return planted
