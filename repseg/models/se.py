# Copyright (c) repseg contributors. All rights reserved.
"""Squeeze-and-excitation (Hu et al., CVPR 2018) as RepVGG-D2se uses it:
after the sum of a block's branches, before its nonlinearity.

The module keeps mmpretrain's ``SELayer`` names (``conv1``, ``conv2``:
1x1 convs with bias, ReLU then sigmoid), so mmpretrain's checkpoints load
as they are; the official RepVGG (``se.down`` / ``se.up``) and timm
(``attn.fc1`` / ``attn.fc2``) layouts are renamed on load
(:mod:`repseg.models.pretrained`). Unlike the official code, which pools
with ``avg_pool2d(kernel_size=W)`` (right only for square maps), the
squeeze is the mean over the whole ``H x W`` map, whatever its shape: a
segmentation crop or a 1024x2048 Cityscapes frame.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor


def se_channels(channels: int, ratio: int = 16, divisor: int = 1,
                min_ratio: float = 0.9) -> int:
    """mmpretrain's ``make_divisible(channels // ratio, divisor)``: the
    nearest multiple of ``divisor`` (at least ``divisor``, and not more than
    10% below the value)."""
    value = channels // ratio
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < min_ratio * value:
        out += divisor
    return out


class SELayer(BaseModule):
    """Squeeze-and-excitation over the whole map.

    ``y = x * sigmoid(conv2(relu(conv1(mean_{H,W}(x)))))``.

    Args:
        channels (int): Channels C of the input (and output).
        ratio (int): The squeeze has ``channels // ratio`` channels (rounded
            by ``divisor``). Default: 16.
        divisor (int): The squeeze's channels are a multiple of it.
            Default: 1 (RepVGG-D2se: ``out_channels // 16`` as in the
            official code).
        squeeze_channels (int, optional): The squeeze's channels, instead of
            ``ratio`` and ``divisor``.
        act_cfg (Sequence[dict]): The activations after ``conv1`` and
            ``conv2``. Default: ReLU, Sigmoid.
        init_gate (float, optional): Start as a constant gate of this
            value in (0, 1) for every channel and image (``conv2``'s
            weights zero, its bias the logit): near the identity with e.g.
            0.98, to add SE to a trained network without SE and fine-tune
            (``se_cfg=dict(ratio=16, divisor=1, init_gate=0.98)`` with
            ``load_from`` its checkpoint). Default: None (``conv2``
            initialized as any conv).
        init_cfg (dict, optional): Initialization config.

    Shape:
        x: (N, C, H, W) -> (N, C, H, W), any H and W.
    """

    def __init__(self,
                 channels: int,
                 ratio: int = 16,
                 divisor: int = 1,
                 squeeze_channels: Optional[int] = None,
                 act_cfg: Sequence[dict] = (dict(type='ReLU'),
                                            dict(type='Sigmoid')),
                 init_gate: Optional[float] = None,
                 init_cfg=None):
        super().__init__(init_cfg)
        if init_gate is not None and not 0 < init_gate < 1:
            raise ValueError(f'se_cfg init_gate must be in (0, 1) (e.g. 0.98:'
                             f' near the identity), got {init_gate!r}')
        self.init_gate = init_gate
        if squeeze_channels is None:
            if not (isinstance(ratio, int) and ratio >= 1 and
                    isinstance(divisor, int) and divisor >= 1):
                raise ValueError(
                    f'se_cfg needs integers ratio >= 1 and divisor >= 1, got '
                    f'ratio={ratio!r}, divisor={divisor!r} (RepVGG-D2se: '
                    'dict(ratio=16, divisor=1))')
            squeeze_channels = se_channels(channels, ratio, divisor)
        if len(act_cfg) != 2:
            raise ValueError('se_cfg act_cfg needs two activations (after '
                             'the squeeze and after the excitation), got '
                             f'{act_cfg!r}')
        self.channels = channels
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = ConvModule(channels, squeeze_channels, 1, bias=True,
                                act_cfg=act_cfg[0])
        self.conv2 = ConvModule(squeeze_channels, channels, 1, bias=True,
                                act_cfg=act_cfg[1])

    def init_weights(self) -> None:
        super().init_weights()
        self.reset_gate()

    def reset_gate(self) -> None:
        """With ``init_gate``: make every gate that constant (``conv2``'s
        weights zero, its bias the logit); without it, nothing."""
        if self.init_gate is not None:
            with torch.no_grad():
                self.conv2.conv.weight.zero_()
                self.conv2.conv.bias.fill_(
                    math.log(self.init_gate / (1 - self.init_gate)))

    def gate(self, x: Tensor) -> Tensor:
        """The per-image, per-channel factors ``(N, C, 1, 1)``."""
        return self.conv2(self.conv1(self.global_avgpool(x)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


__all__ = ['SELayer', 'se_channels']
