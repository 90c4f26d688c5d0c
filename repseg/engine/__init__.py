# Copyright (c) repseg contributors. All rights reserved.
from ..errors import CheckpointError
from .checkpoint import load_any_checkpoint, load_state_dict_file
from .config import adapt_to_device, load_cfg, replace_syncbn
from .dist import (CPUDistributedDataParallel, finish_distributed,
                   init_cpu_distributed)
from .hooks import FusedEvalHook

__all__ = [
    'FusedEvalHook', 'CheckpointError', 'CPUDistributedDataParallel',
    'init_cpu_distributed', 'finish_distributed', 'load_state_dict_file',
    'load_any_checkpoint', 'load_cfg', 'adapt_to_device', 'replace_syncbn'
]
