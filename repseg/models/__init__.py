# Copyright (c) repseg contributors. All rights reserved.
from .repvgg import RepVGG, RepVGGBlock

__all__ = ['RepVGG', 'RepVGGBlock']
