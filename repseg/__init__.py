# Copyright (c) repseg contributors. All rights reserved.
"""repseg: RepVGG backbones for mmsegmentation, trained multi-branch and
deployed as a plain stack of 3x3 convolutions.

Importing ``repseg`` registers its modules in mmsegmentation's registries
(configs reach them with ``custom_imports=dict(imports=['repseg'])``) where
the training stack (torch, mmengine, mmcv, mmseg) is installed. In the
deployment install (numpy, OpenCV and a runtime: docs/deployment.md) it
imports without them, and deployed files run through ``repseg.infer`` and
``repseg.deploy.runtimes``; the names that need the training stack then
say so when used.
"""
from .errors import RepsegError
from .version import __version__

#: the packages of the training stack
TRAINING_STACK = ('torch', 'mmengine', 'mmcv', 'mmseg')

try:
    from . import engine  # noqa: F401  (registers FusedEvalHook)
    from .fileio import register_safe_globals
    from .models import RepVGG, RepVGGBlock
    from .reparam import find_unfused, reparameterize_model
except ImportError as e:
    if (e.name or '').split('.')[0] not in TRAINING_STACK:
        raise
    _missing = e.name

    def __getattr__(name):
        if name in ('RepVGG', 'RepVGGBlock', 'reparameterize_model',
                    'find_unfused'):
            raise ImportError(
                f'repseg.{name} needs the training stack ({_missing} cannot '
                'be imported here): this is the deployment install, which '
                'runs deployed files (tools/infer.py); install the full '
                'stack with scripts/install.sh (it builds mmcv with its '
                'ops; pip install "repseg[train]" alone would not)') from None
        raise AttributeError(f"module 'repseg' has no attribute {name!r}")
else:
    register_safe_globals()

__all__ = [
    'RepVGG', 'RepVGGBlock', 'reparameterize_model', 'find_unfused',
    'RepsegError', '__version__'
]
