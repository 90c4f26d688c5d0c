# Copyright (c) repseg contributors. All rights reserved.
"""Deprecated module (removed in the next release): moved to
:mod:`repseg.quant.equalize`."""
import warnings

from ..quant.equalize import *  # noqa: F401,F403
from ..quant.equalize import check_equalize as check_method  # noqa: F401

warnings.warn('repseg.deploy.equalize is deprecated (removed in the next '
              'release): import repseg.quant.equalize',
              DeprecationWarning, stacklevel=2)
