# Copyright (c) repseg contributors. All rights reserved.
"""The one INT8 pipeline that quantize (:func:`repseg.apis.quantize`) and
the benchmark (``--int8``) both run, in its stages:

1. equalize: the exact repair of (a copy of) the fused segmentor
   (:func:`repseg.quant.equalize.equalize_`, 'off' leaves it as it is);
2. export: the caller's ONNX export of that segmentor (quantize writes the
   deployed file with its record, the benchmark a plain one at its shape);
3. quantize and load: every runtime's fp32 file, its INT8 file calibrated
   on the given inputs and each precision asked for loaded
   (:func:`repseg.deploy.runs.make_runs`).

Callers add their own fields on top (the benchmark its timing, quantize
its accuracy).

Quantize's ``qat`` adds a fourth stage on the equalized segmentor
(:func:`make_qat_models`): quantization-aware fine-tuning
(:mod:`repseg.quant.qat`), one QDQ ONNX export of the fine-tuned model,
and every runtime's INT8 file made from it and loaded."""
import copy
import dataclasses
import os.path as osp
import os
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config

from ..deploy.forward import TorchForward
from ..deploy.runs import Int8Request, RuntimeRun, make_runs, run_label
from ..deploy.runtimes import ControlSet, QuantOptions, Runtime
from .equalize import equalize_
from .qat import QatJob, QatResult, fine_tune


@dataclasses.dataclass
class Int8Job:
    """What the pipeline makes.

    Args:
        runtimes (sequence of Runtime): the runtimes, side by side.
        inputs (list of np.ndarray): calibration inputs (normalized
            ``(1, 3, H, W)`` arrays).
        precisions (sequence of str or None): the precisions to load
            ('fp32', 'bf16', 'int8'); None: every one each runtime has (a
            precision a runtime cannot run here is a note).
        options (QuantOptions): how each runtime quantizes.
        control (ControlSet or None): the control set of accuracy control.
        equalize (str): the repair before export ('activation', 'cle',
            'off').
        pattern (str): the files' names in ``out_dir`` (fields ``runtime``
            and ``precision``; each runtime's suffix appended).
    """
    runtimes: Sequence[Runtime]
    inputs: List[np.ndarray]
    precisions: Optional[Sequence[str]] = None
    options: QuantOptions = dataclasses.field(default_factory=QuantOptions)
    control: Optional[ControlSet] = None
    equalize: str = 'off'
    pattern: str = 'model_{precision}'


@dataclasses.dataclass
class Int8Models:
    """What the pipeline made: the loaded ``runs``, the ``segmentor`` that
    was exported (the equalized copy, or the model itself with 'off'),
    the repair's report (``equalization``) and the ONNX ``export``."""
    runs: List[RuntimeRun]
    segmentor: nn.Module
    equalization: dict
    export: str


def make_int8_models(segmentor: nn.Module,
                     export: Callable[[nn.Module, str], None],
                     out_dir: str, job: Int8Job,
                     log: Callable[[str], None] = print) -> Int8Models:
    """Equalize (a copy of) the fused ``segmentor``, ``export(model,
    path)`` it to ``<out_dir>/<pattern with precision 'fp32'>.onnx``, and
    make and load every runtime's models of it as ``job`` says."""
    deployed = copy.deepcopy(segmentor) if job.equalize != 'off' \
        else segmentor
    equalization = equalize_(deployed, job.inputs, job.equalize)
    onnx_path = osp.join(out_dir, job.pattern.format(
        runtime='onnx', precision='fp32') + '.onnx')
    export(deployed, onnx_path)
    request = Int8Request(job.inputs, job.options, job.control)
    equalized = job.equalize if job.equalize != 'off' else None
    runs = []
    for r in job.runtimes:   # each runtime's rows together
        runs += make_runs(onnx_path, out_dir, job.pattern, [r],
                          job.precisions or r.supported_precisions, request,
                          equalized, log)
    return Int8Models(runs, deployed, equalization, onnx_path)


#: the precision field of the QAT files' names (``pattern``)
QAT_PRECISION = 'int8_qat'


@dataclasses.dataclass
class QatModels:
    """What :func:`make_qat_models` made: the loaded ``runs`` (precision
    'int8', ``quantized['qat']`` set), the fine-tuning's ``result``."""
    runs: List[RuntimeRun]
    result: QatResult


def make_qat_models(cfg: Config, segmentor: nn.Module,
                    inputs: List[np.ndarray], job: QatJob,
                    export: Callable[[QatResult, str], None],
                    out_dir: str, runtimes: Sequence[Runtime],
                    log: Callable[[str], None] = print) -> QatModels:
    """Fine-tune the fused, equalized ``segmentor`` with its quantizers
    simulated (:func:`repseg.quant.qat.fine_tune`, initial ranges from
    ``inputs``), ``export(result, path)`` the result as one QDQ ONNX file
    and make every runtime's INT8 file of it
    (``<out_dir>/model_int8_qat`` + its suffix), loaded."""
    result = fine_tune(cfg, segmentor, inputs, job, log)
    onnx_path = osp.join(out_dir, f'model_{QAT_PRECISION}.export.onnx')
    export(result, onnx_path)
    runs = []
    try:
        for r in runtimes:
            file = r.from_onnx(onnx_path, osp.join(
                out_dir, f'model_{QAT_PRECISION}{r.suffix}'))
            model = r.load(file, 'int8', threads=torch.get_num_threads())
            runs.append(RuntimeRun(
                label=run_label(r.name, QAT_PRECISION), runtime=r.name,
                precision='int8', file=file, forward=TorchForward(model),
                quantized=dict(file=file, qat=True)))
    finally:
        os.remove(onnx_path)
    return QatModels(runs, result)


__all__ = ['Int8Job', 'Int8Models', 'make_int8_models', 'QatModels',
           'make_qat_models', 'QAT_PRECISION']
