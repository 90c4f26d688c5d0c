# Copyright (c) repseg contributors. All rights reserved.
from .runner import (UsageError, adapt_to_device, check_data,
                     check_pretrained, check_work_dir, load_any_checkpoint,
                     load_cfg, replace_syncbn, test, train)

__all__ = [
    'UsageError', 'adapt_to_device', 'check_data', 'check_pretrained',
    'check_work_dir', 'load_any_checkpoint', 'load_cfg', 'replace_syncbn',
    'test', 'train'
]
