# Copyright (c) repseg contributors. All rights reserved.
from . import folded  # noqa: F401  (ConvWithBias, FoldedNorm)
from .arch import ARCH_SETTINGS, DILATION_PRESETS, checkpoint_kind
from .repvgg import RepVGG, RepVGGBlock

__all__ = [
    'RepVGG', 'RepVGGBlock', 'ARCH_SETTINGS', 'DILATION_PRESETS',
    'checkpoint_kind'
]
