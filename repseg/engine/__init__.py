# Copyright (c) repseg contributors. All rights reserved.
from .checkpoint import CheckpointError, checkpoint_kind, load_state_dict_file
from .dist import CPUDistributedDataParallel, init_cpu_distributed
from .hooks import FusedEvalHook

__all__ = [
    'FusedEvalHook', 'CheckpointError', 'CPUDistributedDataParallel',
    'init_cpu_distributed', 'checkpoint_kind',
    'load_state_dict_file'
]
