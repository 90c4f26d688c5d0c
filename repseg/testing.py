# Copyright (c) repseg contributors. All rights reserved.
"""Helpers for checking re-parameterization, shared by the test-suite, the
tools and users' own checks."""
import torch
import torch.nn as nn

from .reparam.fusion import is_batchnorm
from .reparam.verify import compare_outputs


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters
    (in place), so that fusion is tested away from the trivial
    mean=0 / var=1 / gamma=1 / beta=0 point. Returns ``model``."""
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
                m.weight.copy_(rand(0.5, 1.5))
                m.bias.copy_(rand(-0.3, 0.3))
    return model


def max_rel_diff(a, b) -> float:
    """max |a - b| / max |a| over (nested tuples/lists of) tensors, per
    tensor (the largest of the ratios)."""
    if isinstance(a, (tuple, list)):
        return max(max_rel_diff(x, y) for x, y in zip(a, b))
    return compare_outputs(a, b)['relative']
