# Copyright (c) repseg contributors. All rights reserved.
"""INT8 in its own room: calibration data from the train split and the
control set (:mod:`.calibration`), the exact repair of the fused model
before quantization (:mod:`.equalize`), per-layer INT8 sensitivity
(:mod:`.sensitivity`), the one INT8 pipeline of quantize and the
benchmark (:mod:`.pipeline`) and the side-by-side report
(:mod:`.report`). The runtimes' quantizers themselves are behind
:class:`repseg.deploy.runtimes.Runtime`; :func:`repseg.apis.quantize`
puts everything together."""
from .calibration import (calibration_inputs, calibration_set,
                          check_calibration_count, control_batches,
                          split_train)
from .equalize import check_equalize, equalization_lines, equalize_
from .pipeline import Int8Job, Int8Models, make_int8_models
from .report import markdown, row_title, save_per_class_png
from .sensitivity import layer_sensitivity, sensitivity_table

__all__ = [
    'calibration_inputs', 'calibration_set', 'check_calibration_count',
    'control_batches', 'split_train', 'check_equalize', 'equalization_lines',
    'equalize_', 'markdown', 'row_title', 'save_per_class_png',
    'Int8Job', 'Int8Models', 'make_int8_models',
    'layer_sensitivity', 'sensitivity_table'
]
