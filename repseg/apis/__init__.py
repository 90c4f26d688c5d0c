# Copyright (c) repseg contributors. All rights reserved.
"""The entry points the tools call: train, test, quantize and the demo,
with their pre-flight checks."""
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import adapt_to_device, load_cfg, replace_syncbn
from ..errors import DatasetError, RepsegError, UsageError
from .checks import check_data, check_pretrained, check_work_dir
from .inference import init_model
from .quantize import quantize
from .test import test
from .train import train

__all__ = [
    'RepsegError', 'UsageError', 'DatasetError', 'adapt_to_device',
    'check_data', 'check_pretrained', 'check_work_dir', 'init_model',
    'load_any_checkpoint', 'load_cfg', 'quantize', 'replace_syncbn', 'test',
    'train'
]
