# Copyright (c) repseg contributors. All rights reserved.
"""The one path from an exported ONNX file to runtime models that
quantize, test and benchmark share: for each runtime, its fp32 file
(:meth:`~.runtimes.Runtime.from_onnx`), its INT8 file
(:meth:`~.runtimes.Runtime.quantize`) when asked, each precision loaded
(:meth:`~.runtimes.Runtime.load`), and one typed record per model of what
really ran (:class:`RuntimeRun`, whose ``info`` is the runtime's
:class:`~.runtimes.RunInfo`). Callers add their own fields on top (the
benchmark its timing, quantize its accuracy)."""
import dataclasses
import os.path as osp
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from .forward import TorchForward
from .runtimes import (ControlSet, QuantOptions, RunInfo, Runtime,
                       options_for)


#: the runtime field of PyTorch's own rows in reports. PyTorch is not a
#: registered runtime: it runs the module itself (NNPACK convs, autocast,
#: torch.compile, channels-last), not an exported file, and making it one
#: would bring torch into the numpy runtime layer
PYTORCH = 'pytorch'


def run_label(runtime: str, precision: str,
              equalize: Optional[str] = None) -> str:
    """The label of a runtime's model in reports: the runtime's name for
    fp32, ``<runtime>_<precision>`` otherwise, ``_eq`` appended for the
    model of the equalized segmentor."""
    label = runtime if precision == 'fp32' else f'{runtime}_{precision}'
    return label + ('_eq' if equalize else '')


@dataclasses.dataclass
class RuntimeRun:
    """One model made by a runtime and loaded.

    Args:
        label (str): :func:`run_label`.
        runtime (str): the runtime's registry name.
        precision (str): the precision asked for.
        file (str): the model file.
        forward (TorchForward): the loaded model (torch tensors in and
            out; ``forward.model`` is the numpy
            :class:`~.runtimes.RuntimeModel`).
        equalize (str or None): the repair the segmentor had before export
            (``'activation'``, ``'cle'``), else None.
        quantized (dict or None): what the runtime's quantizer returned
            (INT8 runs).
    """
    label: str
    runtime: str
    precision: str
    file: str
    forward: TorchForward
    equalize: Optional[str] = None
    quantized: Optional[dict] = None

    @property
    def info(self) -> RunInfo:
        """What the runtime says it runs."""
        return self.forward.info


@dataclasses.dataclass
class Int8Request:
    """How INT8 models are made: calibration ``inputs`` (normalized
    ``(1, 3, H, W)`` arrays), ``options`` (each runtime reads its own:
    :func:`~.runtimes.options_for`) and the ``control`` set of runtimes
    with accuracy control."""
    inputs: List[np.ndarray]
    options: QuantOptions = dataclasses.field(default_factory=QuantOptions)
    control: Optional[ControlSet] = None


def make_runs(onnx_path: str, out_dir: str, pattern: str,
              runtimes: Sequence[Runtime],
              precisions: Sequence[str] = ('fp32', ),
              int8: Optional[Int8Request] = None,
              equalize: Optional[str] = None,
              log: Callable[[str], None] = print) -> List[RuntimeRun]:
    """Make and load, for every runtime of ``runtimes``, its models of
    the fp32 ONNX file ``onnx_path`` in each of ``precisions`` that it can
    run here (a precision it cannot run here is left out with a note
    through ``log``; 'int8' quantizes as ``int8`` says). Files are written
    into ``out_dir`` as ``pattern``
    (e.g. ``'model_{precision}'``, fields ``runtime`` and ``precision``:
    'fp32' or 'int8') plus the runtime's suffix. Models run with torch's
    thread count, so that they compare like with like with PyTorch."""
    runs = []
    for r in runtimes:
        def path(p, r=r):
            return osp.join(out_dir, pattern.format(runtime=r.name,
                                                    precision=p) + r.suffix)

        files = dict(fp32=r.from_onnx(onnx_path, path('fp32')))
        wanted = []
        for p in precisions:
            if p not in r.precisions():
                log(f'note: no {r.label} {p} row: {r.missing(p)}')
                continue
            wanted.append(p)
        quantized = None
        if 'int8' in wanted:
            if int8 is None or not int8.inputs:
                raise ValueError('INT8 runs need calibration inputs')
            log(f'quantizing with {r.label}')
            mine = options_for(r, int8.options)
            quantized = r.quantize(
                files['fp32'], path('int8'), int8.inputs, mine,
                int8.control if mine.max_drop is not None else None)
            files['int8'] = quantized['file']
        for p in wanted:
            file = files['int8' if p == 'int8' else 'fp32']
            model = r.load(file, p, threads=torch.get_num_threads())
            runs.append(RuntimeRun(
                label=run_label(r.name, p, equalize), runtime=r.name,
                precision=p, file=file, forward=TorchForward(model),
                equalize=equalize,
                quantized=quantized if p == 'int8' else None))
    return runs


__all__ = ['PYTORCH', 'Int8Request', 'RuntimeRun', 'make_runs',
           'run_label']
