# Copyright (c) repseg contributors. All rights reserved.
"""The small interface every inference runtime of repseg implements.

A runtime (ONNX Runtime, OpenVINO) does three things for the tools:

* :meth:`Runtime.from_onnx`: make its own fp32 model file from the fused
  segmentor's ONNX export (:func:`repseg.deploy.onnx.to_onnx`);
* :meth:`Runtime.quantize`: make its INT8 model from that file and
  calibration inputs (:class:`QuantOptions`);
* :meth:`Runtime.load`: run a model file (fp32, bf16 where the runtime and
  the CPU have it, or INT8) as a :class:`RuntimeModel`, a callable that
  stands in for a segmentor's ``encode_decode`` and says what really ran
  (:attr:`RuntimeModel.info`, read from the runtime, not from what was
  asked).

export, quantize, test and benchmark use only this interface; nothing
outside ``runtimes/`` imports a runtime package.
"""
import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ...errors import BackendError, UsageError, opt

#: metadata key under which a model file holds its record (ONNX
#: metadata_props, OpenVINO rt_info): see :mod:`repseg.deploy.record`
RECORD_KEY = 'repseg'
#: precisions a runtime may run a model in
PRECISIONS = ('fp32', 'bf16', 'int8')


@dataclasses.dataclass
class QuantOptions:
    """Post-training quantization settings; each runtime reads the ones it
    has and :meth:`Runtime.quantize` refuses the ones it has not.

    Args:
        method (str): the calibration statistic of the activation ranges,
            the same for every runtime that has it (see each runtime's
            ``calibration_methods``): 'minmax' (the smallest and largest
            value over all calibration inputs; both runtimes),
            'mean_minmax' (the mean over inputs of each input's extremes:
            NNCF's own default, which clips the rarer large activations),
            'entropy' and 'percentile' (ONNX Runtime).
        reduce_range (bool): 7-bit weights (ONNX Runtime; for CPUs without
            VNNI, whose U8S8 kernels saturate int16 pair sums).
        preset (str): NNCF's preset: 'performance' (symmetric activations
            and weights) or 'mixed' (asymmetric activations).
        fast_bias_correction (bool): NNCF's fast bias correction (True,
            its default) or the full one (slower, sometimes more accurate).
        ignored_types (tuple): operation types NNCF leaves in float. The
            default keeps the exact adaptive pooling products of PSPNet's
            pyramid (MatMul) in float: quantized, OpenVINO cannot compile
            them at sizes whose bins are unequal ("No suitable
            implementations"); they are not convolutions.
        max_drop (float or None): the largest mIoU drop (points, 0-100) on
            the control set that accuracy control may leave (OpenVINO:
            ``nncf.quantize_with_accuracy_control`` keeps the layers that
            cost most in float until the drop is within it).
    """
    method: str = 'minmax'
    reduce_range: bool = False
    preset: str = 'performance'
    fast_bias_correction: bool = True
    ignored_types: Sequence[str] = ('MatMul', )
    max_drop: Optional[float] = None


@dataclasses.dataclass
class ControlSet:
    """The images accuracy control validates candidate INT8 models on
    (neither calibration nor evaluation images): ``items`` go to
    ``metric(model, items)``, which returns the mIoU (0-100) of a model
    callable like :class:`RuntimeModel`."""
    items: list
    metric: Callable[[Callable, list], float]
    name: str = ''


class RuntimeModel:
    """A model file loaded in a runtime: ``model(inputs)`` maps a normalized
    image batch ``(N, 3, H, W)`` to logits ``(N, num_classes, H, W)``; with
    a second argument (``batch_img_metas``, ignored) it is a drop-in for a
    segmentor's ``encode_decode``, so mmseg's test loop (whole or sliding
    window) runs around it.

    Attributes:
        info (dict): ``runtime``, ``file``, ``precision`` (what the runtime
            really ran for the convolutions: 'fp32', 'bf16', 'int8'),
            ``kernels`` (a short description of what executed them),
            ``threads`` and ``float_layers`` (convolutions and matrix
            products of an INT8 model that stayed in float, by name).
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], info: dict):
        self._run = run
        self.info = info

    def __call__(self, inputs: torch.Tensor,
                 batch_img_metas=None) -> torch.Tensor:
        x = np.ascontiguousarray(inputs.detach().float().cpu().numpy())
        return torch.from_numpy(np.array(self._run(x), copy=True))

    def __repr__(self) -> str:
        i = self.info
        return (f"RuntimeModel({i.get('runtime')}, {i.get('file')!r}, "
                f"precision={i.get('precision')!r})")


class Runtime:
    """One inference runtime (subclasses: one module each)."""

    #: key used by the tools (``--backend NAME``) and in reports
    name: str = ''
    #: what users call it
    label: str = ''
    #: suffix of its model files
    suffix: str = ''
    #: Python packages it needs and how to install them
    packages: Sequence[str] = ()
    #: calibration statistics its quantizer has (``QuantOptions.method``)
    calibration_methods: Sequence[str] = ()

    def require(self):
        """Import the runtime's packages (the first is returned), or raise
        :class:`BackendError` saying how to install them."""
        mods = []
        for name in self.packages:
            try:
                mods.append(__import__(name))
            except Exception as e:  # noqa: B902  (ImportError, broken libs)
                raise BackendError(
                    f'{self.label} needs the Python package {name!r}, which '
                    f'cannot be imported here ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:200] if str(e) else ""}): '
                    f'pip install {" ".join(self.packages)} (or run '
                    'scripts/install.sh)') from None
        return mods[0] if mods else None

    def check_method(self, method: str) -> None:
        """Refuse a calibration statistic this runtime's quantizer has
        not (before any data is read)."""
        if method not in self.calibration_methods:
            raise UsageError(
                f'{opt("method", method)}: {self.label} calibrates '
                f'with {" or ".join(self.calibration_methods)}; choose one '
                f'of them (or leave {self.label} out of '
                f'{opt("backend", None)})')

    def precisions(self) -> Sequence[str]:
        """The precisions this runtime can run on this CPU."""
        return ('fp32', 'int8')

    def from_onnx(self, onnx_path: str, out: str) -> str:
        """Write the runtime's own fp32 model file ``out`` (``self.suffix``)
        from an exported fp32 ONNX file; returns ``out``."""
        raise NotImplementedError

    def quantize(self, fp32_path: str, out: str,
                 inputs: List[np.ndarray],
                 options: Optional[QuantOptions] = None,
                 control: Optional[ControlSet] = None) -> dict:
        """Write the INT8 model ``out`` of the fp32 model file
        ``fp32_path`` calibrated on ``inputs`` (normalized ``(1, 3, H, W)``
        arrays); ``control`` for accuracy control where the runtime has
        it. Returns a dict with at least ``file``."""
        raise NotImplementedError

    def load(self, path: str, precision: Optional[str] = None
             ) -> RuntimeModel:
        """Run the model file ``path``: ``None`` runs it as written (float
        parts in fp32); 'fp32' or 'int8' does the same and checks that the
        file is of that precision; 'bf16' asks the runtime to compute in
        bf16 (refused where it or the CPU has none)."""
        raise NotImplementedError

    def files(self, path: str) -> List[str]:
        """Every file a model at ``path`` consists of."""
        return [path]

    def missing(self, precision: str) -> str:
        """Why ``precision`` cannot run here (for notes and errors)."""
        return (f'{self.label} cannot run {precision} here: it runs '
                f'{", ".join(self.precisions())} on this CPU')

    def _check_precision(self, precision: str) -> None:
        if precision not in PRECISIONS:
            raise BackendError(f'precision must be one of {PRECISIONS}, got '
                               f'{precision!r}')
        if precision not in self.precisions():
            raise BackendError(self.missing(precision))


def read_record(text: Optional[str]) -> Optional[dict]:
    """The record (:func:`repseg.deploy.record.model_record`) stored in a
    model file's metadata as JSON; None when the file has none."""
    if not text:
        return None
    import json
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def static_size(dims: Sequence) -> Optional[List[int]]:
    """[H, W] of an NCHW input shape whose H and W are fixed numbers, else
    None (dynamic)."""
    hw = list(dims)[-2:]
    return [int(d) for d in hw] if len(hw) == 2 and all(
        isinstance(d, int) and d > 0 for d in hw) else None


def count_by(values: Sequence[str]) -> Dict[str, int]:
    """``{value: how many}`` in order of first appearance."""
    out: Dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


__all__ = ['PRECISIONS', 'QuantOptions', 'ControlSet', 'RuntimeModel',
           'Runtime', 'count_by']
