# Copyright (c) repseg contributors. All rights reserved.
"""INT8 in its own room: calibration data from the train split and the
control set (:mod:`.calibration`), the exact repair of the fused model
before quantization (:mod:`.equalize`), per-layer INT8 sensitivity
(:mod:`.sensitivity`), the one INT8 pipeline of quantize and the
benchmark (:mod:`.pipeline`) and the side-by-side report
(:mod:`.report`), and quantization-aware fine-tuning (:mod:`.qat`,
NNCF's PyTorch quantizers in mmengine's loop). The runtimes' quantizers
themselves are behind :class:`repseg.deploy.runtimes.Runtime`;
:func:`repseg.apis.quantize` puts everything together."""
from .calibration import (calibration_inputs, calibration_set,
                          check_calibration_count, control_batches,
                          split_train)
from .equalize import check_equalize, equalization_lines, equalize_
from .pipeline import (Int8Job, Int8Models, QatModels, make_int8_models,
                       make_qat_models)
from .qat import QatJob, QatResult, export_qat, fine_tune, qat_model
from .report import markdown, qat_lines, row_title, save_per_class_png
from .sensitivity import layer_sensitivity, sensitivity_table

__all__ = [
    'calibration_inputs', 'calibration_set', 'check_calibration_count',
    'control_batches', 'split_train', 'check_equalize', 'equalization_lines',
    'equalize_', 'markdown', 'row_title', 'save_per_class_png',
    'Int8Job', 'Int8Models', 'make_int8_models', 'QatModels',
    'make_qat_models', 'QatJob', 'QatResult', 'export_qat', 'fine_tune',
    'qat_model', 'qat_lines',
    'layer_sensitivity', 'sensitivity_table'
]
