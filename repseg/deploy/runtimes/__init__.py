# Copyright (c) repseg contributors. All rights reserved.
"""Inference runtimes behind one small interface (:mod:`.base`), one
module each: ONNX Runtime (:mod:`.onnxruntime`, portable) and OpenVINO
(:mod:`.openvino`, Intel CPUs: bf16 and NNCF INT8).

The registry below names each runtime's class; a runtime's module is
imported the first time its class is asked for, and imports only numpy
(its runtime package is imported when a model is made or run), so building
a tool's ``--backend`` choices or ``--help`` costs no runtime import. A new
runtime is a :class:`~.base.Runtime` subclass in its own module plus one
line in :data:`_REGISTRY` (or, from outside repseg,
:func:`register_runtime`).
"""
import dataclasses
import importlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ...errors import UsageError, opt
from .base import (DEFAULT_CALIB_METHOD, MODES, PRECISIONS, ControlSet,
                   QuantOptions, RunInfo, Runtime, RuntimeModel,
                   RuntimeOptions, default_threads, option)
from .record import SCHEMA, ModelRecord, Recipe, read_record

#: --backend NAME -> 'module:Class' of its runtime (or the class itself)
_REGISTRY: Dict[str, Union[str, type]] = {
    'openvino': 'repseg.deploy.runtimes.openvino:OpenVINO',
    'onnxruntime': 'repseg.deploy.runtimes.onnxruntime:OnnxRuntime',
}
#: the runtime quantize and export use when none is named: the portable one
DEFAULT_RUNTIME = 'onnxruntime'
_made: Dict[str, Runtime] = {}


def register_runtime(cls: type, name: Optional[str] = None,
                     force: bool = False) -> type:
    """Register a :class:`Runtime` subclass under ``name`` (default: its
    ``name``); every tool then offers it (``--backend``). Usable as a
    class decorator."""
    name = name or cls.name
    if not (isinstance(cls, type) and issubclass(cls, Runtime)) or not name:
        raise TypeError('register a named subclass of repseg.deploy.'
                        f'runtimes.Runtime, got {cls!r}')
    if name in _REGISTRY and not force:
        raise KeyError(f'a runtime called {name!r} is registered already')
    _REGISTRY[name] = cls
    _made.pop(name, None)
    return cls


def unregister_runtime(name: str) -> None:
    """Remove a runtime registered with :func:`register_runtime`."""
    _REGISTRY.pop(name, None)
    _made.pop(name, None)


def runtime_names() -> List[str]:
    """The registered runtimes' names, in registration order."""
    return list(_REGISTRY)


def runtime_class(name: str) -> type:
    """The class of the runtime ``name`` (its module imported now)."""
    if name not in _REGISTRY:
        raise UsageError(f'{opt("backend", name)} is not a runtime: choose '
                         f'one of {runtime_names()}')
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attr = target.partition(':')
        target = _REGISTRY[name] = getattr(importlib.import_module(module),
                                           attr)
    return target


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (one instance per process)."""
    if name not in _made:
        _made[name] = runtime_class(name)()
    return _made[name]


def runtime_of_file(path: str) -> Optional[Runtime]:
    """The runtime whose model files end like ``path`` (.onnx: ONNX
    Runtime, .xml: OpenVINO IR), or None."""
    found = [n for n in runtime_names()
             if path.lower().endswith(runtime_class(n).suffix.lower())]
    if not found:
        return None
    # the longest suffix: 'm.fp16.onnx' is a plug-in's before ONNX's
    return get_runtime(max(found, key=lambda n: len(runtime_class(n).suffix)))


def runtime_label(name: str) -> str:
    """What users call the runtime ``name`` ('ONNX Runtime'); an unknown
    name is returned as it is."""
    return runtime_class(name).label if name in _REGISTRY else name


def calibration_methods() -> Dict[str, str]:
    """Every registered runtime's calibration statistics, each with its
    explanation and the runtimes that have it (``--calib-method``)."""
    out: Dict[str, List[str]] = {}
    text: Dict[str, str] = {}
    for name in runtime_names():
        cls = runtime_class(name)
        for method, what in cls.calibration_methods.items():
            out.setdefault(method, []).append(cls.label)
            text.setdefault(method, what)
    return {m: f'{text[m]} ({", ".join(labels)})'
            for m, labels in out.items()}


def select_runtimes(names: Sequence[str],
                    options: Optional[QuantOptions] = None
                    ) -> List[Runtime]:
    """The runtimes of ``names`` (each once) for quantizing with
    ``options``, or a UsageError for a setting that fits none of them
    (checked before any data is read): a calibration statistic one of them
    lacks, accuracy control without a runtime that has it, a runtime's own
    setting (e.g. ONNX Runtime's ``reduce_range``) without that runtime,
    a value one of them does not take."""
    runtimes = [get_runtime(n) for n in dict.fromkeys(names)]
    if not runtimes:
        raise UsageError(f'name at least one {opt("backend", None)}')
    if options is None:
        return runtimes
    _check_runtime_options(runtimes, options.runtime_options)
    for r in runtimes:
        r.check_options(options_for(r, options))
    if options.max_drop is not None:
        if not any(r.accuracy_control for r in runtimes):
            have = [runtime_class(n) for n in runtime_names()
                    if runtime_class(n).accuracy_control]
            raise UsageError(
                f'{opt("max_drop", options.max_drop)} is accuracy control, '
                f'which {" and ".join(c.described() for c in have)} '
                f'has and {" and ".join(r.label for r in runtimes)} has '
                'not: '
                'add ' + ' or '.join(opt('backend', c.name) for c in have))
        if not 0 <= options.max_drop <= 100:
            raise UsageError(f'{opt("max_drop", options.max_drop)} is in '
                             'mIoU points: give a value from 0 to 100')
    return runtimes


def _check_runtime_options(runtimes: Sequence[Runtime],
                           values: Mapping[str, Any]) -> None:
    """Refuse a runtime setting no registered runtime has, and a
    non-default one that none of ``runtimes`` has."""
    settings = runtime_settings()
    for name, value in (values or {}).items():
        if name not in settings:
            raise UsageError(
                f'{opt(name, value)} is no runtime\'s setting: the '
                f'runtimes\' own settings are {", ".join(settings)}')
        field, owners = settings[name]
        value = tuple(value) if isinstance(value, list) else value
        if value != field.default and not any(
                name in _names(r.own_options) for r in runtimes):
            raise UsageError(
                f'{opt(name, value)} is a setting of '
                f'{" and ".join(c.label for c in owners)}: add '
                + ' or '.join(opt('backend', c.name) for c in owners)
                + ' or leave it out')


def _names(own_options: type) -> List[str]:
    return [f.name for f in own_options.settings()]


def runtime_settings() -> Dict[str, Tuple[dataclasses.Field, List[type]]]:
    """Every registered runtime's own quantization settings by name:
    ``(field, [runtime classes that have it])`` (the field of the first
    that declares it: its default, ``metadata['help']``, ``choices``,
    ``flag``), in registration order; the tools' flags and the reports'
    settings lines are made from it."""
    out: Dict[str, Tuple[dataclasses.Field, List[type]]] = {}
    for name in runtime_names():
        cls = runtime_class(name)
        for f in cls.own_options.settings():
            out.setdefault(f.name, (f, []))[1].append(cls)
    return out


def runtime_setting_values(values: Optional[Mapping[str, Any]] = None
                           ) -> Dict[str, Any]:
    """``{name: value}`` of every registered runtime's own settings:
    ``values`` where given, else the default (JSON types: lists)."""
    values = values or {}
    return {n: list(v) if isinstance(v, tuple) else v
            for n, (f, _) in runtime_settings().items()
            for v in [values.get(n, f.default)]}


def options_for(runtime: Runtime, options: QuantOptions) -> QuantOptions:
    """``options`` as ``runtime`` reads them: only its own settings
    (:meth:`~.base.Runtime.options_of`), accuracy control only where it
    has it."""
    own = set(_names(runtime.own_options))
    return dataclasses.replace(
        options, runtime_options={k: v for k, v in (
            options.runtime_options or {}).items() if k in own},
        max_drop=options.max_drop if runtime.accuracy_control else None)


__all__ = ['DEFAULT_RUNTIME', 'PRECISIONS', 'MODES', 'DEFAULT_CALIB_METHOD',
           'Runtime', 'RuntimeModel', 'RunInfo', 'QuantOptions', 'ControlSet',
           'default_threads', 'register_runtime', 'unregister_runtime',
           'runtime_names', 'runtime_class', 'get_runtime', 'runtime_of_file',
           'runtime_label', 'calibration_methods', 'select_runtimes',
           'options_for', 'runtime_settings', 'runtime_setting_values',
           'RuntimeOptions', 'option', 'ModelRecord', 'Recipe', 'SCHEMA',
           'read_record']
