# Copyright (c) repseg contributors. All rights reserved.
"""Deprecated module name (removed in the next release): the NNPACK
convolutions are :mod:`repseg.ops.nnpack_conv`; "fast" now names only the
paper's dilation layout."""
import warnings

from . import count_fast_convs, use_fast_convs  # noqa: F401
from .nnpack_conv import *  # noqa: F401,F403
from .nnpack_conv import __all__ as _names

warnings.warn(
    'repseg.ops.fast_conv is deprecated (removed in the next release): '
    'import repseg.ops.nnpack_conv', DeprecationWarning, stacklevel=2)

__all__ = list(_names) + ['use_fast_convs', 'count_fast_convs']
