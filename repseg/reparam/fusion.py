# Copyright (c) repseg contributors. All rights reserved.
"""The algebra of structural re-parameterization, in one place.

Every function here uses the *running statistics* of a BatchNorm layer, i.e.
the eval-mode semantics of BN, whatever mode (train/eval) the owning module is
in: a fused conv reproduces the branch it replaces exactly as that branch
behaves in ``model.eval()``.

All arithmetic is carried out in float64 and cast back to the dtype of the
source weights, so that fusing a deep network does not accumulate rounding
error beyond that of the float32 forward pass itself.

The functions are deliberately small and pure (tensors in, tensors out) so that
they can be tested one by one; :mod:`repseg.models.repvgg` (the RepVGG block)
and :mod:`repseg.reparam` (the model walker) call them and contain no fusion
math of their own.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def is_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm whose running statistics can be
    folded (torch BN/SyncBN and mmcv's ``MMSyncBN``)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    # mmcv.ops.SyncBatchNorm ("MMSyncBN") is not a _BatchNorm subclass.
    return (type(module).__name__ == 'SyncBatchNorm'
            and hasattr(module, 'running_mean')
            and hasattr(module, 'running_var'))


def bn_scale_shift(bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """Per-channel affine map ``y = scale * x + shift`` that ``bn`` computes
    in eval mode, in float64.

    ``scale = gamma / sqrt(running_var + eps)`` and
    ``shift = beta - running_mean * scale``.

    Raises:
        ValueError: if ``bn`` keeps no running statistics
            (``track_running_stats=False``): it then normalizes with batch
            statistics even in eval mode and cannot be folded into a conv.
    """
    if getattr(bn, 'running_mean', None) is None or getattr(
            bn, 'running_var', None) is None:
        raise ValueError(
            f'{type(bn).__name__} has no running statistics '
            '(track_running_stats=False); it normalizes with batch '
            'statistics and cannot be folded into a convolution. Build the '
            'model with track_running_stats=True to re-parameterize it.')
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    std = torch.sqrt(var + bn.eps)
    gamma = (bn.weight.detach().double()
             if getattr(bn, 'weight', None) is not None else
             torch.ones_like(mean))
    beta = (bn.bias.detach().double()
            if getattr(bn, 'bias', None) is not None else
            torch.zeros_like(mean))
    scale = gamma / std
    return scale, beta - mean * scale


def fuse_kernel_bn(kernel: Tensor,
                   bn: nn.Module,
                   bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Fold ``bn`` into a conv ``kernel`` (and optional ``bias``) it follows.

    Args:
        kernel (Tensor): conv weight of shape (C_out, C_in/groups, kh, kw).
        bn (nn.Module): BatchNorm over C_out channels.
        bias (Tensor, optional): conv bias of shape (C_out,).

    Returns:
        tuple[Tensor, Tensor]: float64 kernel (same shape) and bias (C_out,)
        such that ``conv(x, k', b') == bn(conv(x, k, b))`` in eval mode.
    """
    scale, shift = bn_scale_shift(bn)
    if scale.numel() != kernel.shape[0]:
        raise ValueError(
            f'BatchNorm has {scale.numel()} channels but the conv it follows '
            f'has {kernel.shape[0]} output channels; they cannot be fused.')
    kernel = kernel.detach().double()
    fused_kernel = kernel * scale.reshape(-1, 1, 1, 1)
    if bias is not None:
        shift = shift + bias.detach().double() * scale
    return fused_kernel, shift


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a square (C_out, C_in, k, k) kernel to ``size`` x ``size``,
    keeping it centred.

    A 1x1 kernel lands on the centre tap of the 3x3 kernel. This stays exact
    for a dilated 3x3 conv (padding = dilation) because the centre tap of a
    dilated kernel still reads the un-shifted input pixel.
    """
    k = kernel.shape[-1]
    if kernel.shape[-2] != k or (size - k) % 2:
        raise ValueError(f'cannot centre a {tuple(kernel.shape[-2:])} kernel '
                         f'in a {size}x{size} one')
    p = (size - k) // 2
    return F.pad(kernel, [p, p, p, p])


def identity_kernel(channels: int,
                    groups: int = 1,
                    size: int = 3,
                    dtype: torch.dtype = torch.float64,
                    device=None) -> Tensor:
    """The kernel of a grouped ``size`` x ``size`` conv that is the identity.

    Returns a tensor of shape (channels, channels // groups, size, size) whose
    only non-zero entries are ones at the centre tap where output channel c
    reads its own input channel (index ``c % (channels // groups)`` within its
    group).
    """
    if channels % groups:
        raise ValueError(f'{channels} channels are not divisible into '
                         f'{groups} groups')
    per_group = channels // groups
    kernel = torch.zeros(
        channels, per_group, size, size, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    kernel[idx, idx % per_group, size // 2, size // 2] = 1
    return kernel


def _plain(conv: nn.Conv2d) -> Tuple[Tensor, Tensor]:
    """Kernel and bias (zeros without one) of a conv with no BN, float64."""
    kernel = conv.weight.detach().double()
    bias = (conv.bias.detach().double() if conv.bias is not None else
            torch.zeros(kernel.shape[0], dtype=torch.float64,
                        device=kernel.device))
    return kernel, bias


def fuse_branches(conv3x3: nn.Conv2d,
                  bn3x3: nn.Module,
                  conv1x1: Optional[nn.Conv2d] = None,
                  bn1x1: Optional[nn.Module] = None,
                  bn_identity: Optional[nn.Module] = None,
                  identity: bool = False,
                  bn_post: Optional[nn.Module] = None
                  ) -> Tuple[Tensor, Tensor]:
    """Sum the branches of a RepVGG-style block into one 3x3 kernel and
    bias.

    The block computes ``bn_post(bn3x3(conv3x3(x)) + bn1x1(conv1x1(x)) +
    bn_identity(x))``; every part but the 3x3 branch is optional, and a
    missing ``bn1x1`` / ``bn_identity`` means that branch has no BN
    (``identity=True`` adds a plain ``x``), as in the QARepVGG block
    (``conv3x3+BN``, a plain 1x1 conv, ``x``, then one BN after the sum).
    ``conv1x1`` must share stride and groups with ``conv3x3`` and use
    padding ``conv3x3.padding - conv3x3.dilation`` (zero for the usual
    padding = dilation), so that it reads the centre tap.

    Returns:
        tuple[Tensor, Tensor]: float64 kernel of ``conv3x3``'s shape and bias
        of shape (C_out,).
    """
    kernel, bias = fuse_kernel_bn(conv3x3.weight, bn3x3, conv3x3.bias)
    size = conv3x3.kernel_size[0]
    groups = conv3x3.groups
    if conv1x1 is not None:
        expected_pad = tuple(p - d * (size // 2) for p, d in zip(
            conv3x3.padding, conv3x3.dilation))
        if (conv1x1.groups != groups or conv1x1.stride != conv3x3.stride
                or tuple(conv1x1.padding) != expected_pad):
            raise ValueError(
                'the 1x1 branch must share groups and stride with the 3x3 '
                f'branch and use padding {expected_pad} to be fused; got '
                f'groups={conv1x1.groups}, stride={conv1x1.stride}, '
                f'padding={conv1x1.padding}')
        k1, b1 = (fuse_kernel_bn(conv1x1.weight, bn1x1, conv1x1.bias)
                  if bn1x1 is not None else _plain(conv1x1))
        kernel = kernel + pad_kernel(k1, size)
        bias = bias + b1
    if bn_identity is not None or identity:
        ident = identity_kernel(
            kernel.shape[0], groups, size, device=kernel.device)
        if bn_identity is not None:
            ident, bi = fuse_kernel_bn(ident, bn_identity)
            bias = bias + bi
        kernel = kernel + ident
    if bn_post is not None:
        kernel, bias = fuse_kernel_bn(kernel, bn_post, bias)
    return kernel, bias


def fold_conv_bn_(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """Fold ``bn`` into ``conv`` in place (weight rescaled, bias created or
    updated) and return ``conv``. The caller replaces ``bn`` by an identity.
    """
    kernel, bias = fuse_kernel_bn(conv.weight, bn, conv.bias)
    dtype = conv.weight.dtype
    with torch.no_grad():
        conv.weight.copy_(kernel.to(dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(
                bias.to(dtype=dtype, device=conv.weight.device))
        else:
            conv.bias.copy_(bias.to(dtype))
    return conv
