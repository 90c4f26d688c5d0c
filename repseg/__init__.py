# Copyright (c) repseg contributors. All rights reserved.
"""repseg: RepVGG backbones for mmsegmentation, trained multi-branch and
deployed as a plain stack of 3x3 convolutions.

Importing ``repseg`` registers its modules in mmsegmentation's registries
(configs reach them with ``custom_imports=dict(imports=['repseg'])``).
"""
from . import engine  # noqa: F401  (registers FusedEvalHook)
from .fileio import register_safe_globals
from .models import RepVGG, RepVGGBlock
from .errors import RepsegError
from .reparam import find_unfused, reparameterize_model
from .version import __version__

register_safe_globals()

__all__ = [
    'RepVGG', 'RepVGGBlock', 'reparameterize_model', 'find_unfused',
    'RepsegError', '__version__'
]
