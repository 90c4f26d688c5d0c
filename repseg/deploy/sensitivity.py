# Copyright (c) repseg contributors. All rights reserved.
"""Deprecated module (removed in the next release): moved to
:mod:`repseg.quant.sensitivity`."""
import warnings

from ..quant.sensitivity import *  # noqa: F401,F403

warnings.warn('repseg.deploy.sensitivity is deprecated (removed in the next '
              'release): import repseg.quant.sensitivity',
              DeprecationWarning, stacklevel=2)
