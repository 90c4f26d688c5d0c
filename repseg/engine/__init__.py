# Copyright (c) repseg contributors. All rights reserved.
from .checkpoint import CheckpointError, checkpoint_kind, load_state_dict_file
from .hooks import FusedEvalHook

__all__ = [
    'FusedEvalHook', 'CheckpointError', 'checkpoint_kind',
    'load_state_dict_file'
]
