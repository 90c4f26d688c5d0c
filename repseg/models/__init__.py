# Copyright (c) repseg contributors. All rights reserved.
from . import folded  # noqa: F401  (ConvWithBias, FoldedNorm)
from .repvgg import RepVGG, RepVGGBlock

__all__ = ['RepVGG', 'RepVGGBlock']
