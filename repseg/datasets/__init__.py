# Copyright (c) repseg contributors. All rights reserved.
from .cityscapes import (CLASSES, DatasetError, check_cityscapes,
                         convert_label_ids)
from .synthetic import generate_synthetic_cityscapes, render_scene

__all__ = [
    'CLASSES', 'DatasetError', 'check_cityscapes', 'convert_label_ids',
    'generate_synthetic_cityscapes', 'render_scene'
]
