# Copyright (c) repseg contributors. All rights reserved.
"""Deprecated module (removed in the next release): moved to
:mod:`repseg.quant.calibration` (calibration data),
:mod:`repseg.quant.report` (the report) and :mod:`repseg.deploy.evaluate`
(evaluation); the saturation note is ONNX Runtime's ``notes()``."""
import warnings

from ..quant.calibration import *  # noqa: F401,F403
from ..quant.report import markdown, run_label, save_per_class_png  # noqa
from .evaluate import evaluate, miou  # noqa: F401

warnings.warn('repseg.deploy.quantize is deprecated (removed in the next '
              'release): import repseg.quant.calibration, '
              'repseg.quant.report or repseg.deploy.evaluate',
              DeprecationWarning, stacklevel=2)
