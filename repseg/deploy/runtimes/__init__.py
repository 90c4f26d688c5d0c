# Copyright (c) repseg contributors. All rights reserved.
"""Inference runtimes behind one small interface (:mod:`.base`), one
module each: ONNX Runtime (:mod:`.onnxruntime`, portable) and OpenVINO
(:mod:`.openvino`, Intel CPUs: bf16 and NNCF INT8). A new runtime is a
:class:`~.base.Runtime` subclass in its own module, listed in
:data:`RUNTIMES`."""
from typing import Dict

from ...errors import UsageError, opt
from .base import (PRECISIONS, ControlSet, QuantOptions, Runtime,
                   RuntimeModel)
from .onnxruntime import OnnxRuntime
from .openvino import OpenVINO

#: --backend NAME -> its runtime class
RUNTIMES: Dict[str, type] = {'onnxruntime': OnnxRuntime,
                             'openvino': OpenVINO}
_made: Dict[str, Runtime] = {}


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (one instance per process)."""
    if name not in RUNTIMES:
        raise UsageError(f'{opt("backend", name)} is not a runtime: choose '
                         f'one of {sorted(RUNTIMES)}')
    if name not in _made:
        _made[name] = RUNTIMES[name]()
    return _made[name]


def runtime_of_file(path: str):
    """The runtime whose model files end like ``path`` (.onnx: ONNX
    Runtime, .xml: OpenVINO IR), or None."""
    for name, cls in RUNTIMES.items():
        if path.lower().endswith(cls.suffix):
            return get_runtime(name)
    return None


__all__ = ['RUNTIMES', 'PRECISIONS', 'Runtime', 'RuntimeModel',
           'QuantOptions', 'ControlSet', 'get_runtime', 'runtime_of_file']
