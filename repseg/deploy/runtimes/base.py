# Copyright (c) repseg contributors. All rights reserved.
"""The small interface every inference runtime of repseg implements, in
numpy: nothing in ``runtimes/`` imports torch or an OpenMMLab package, so a
deployed file runs where only numpy and the runtime are installed.

A runtime (ONNX Runtime, OpenVINO, or a plug-in registered with
:func:`repseg.deploy.runtimes.register_runtime`) does three things:

* :meth:`Runtime.from_onnx`: make its own fp32 model file from the fused
  segmentor's ONNX export (:func:`repseg.deploy.onnx.to_onnx`);
* :meth:`Runtime.quantize`: make its INT8 model from that file and
  calibration inputs (:class:`QuantOptions`);
* :meth:`Runtime.load`: run a model file (fp32, bf16 where the runtime and
  the CPU have it, or INT8) as a :class:`RuntimeModel`, a callable from a
  normalized ``(N, 3, H, W)`` float32 array to logits, with an
  asynchronous :meth:`RuntimeModel.submit` for several requests in flight,
  that says what really ran (:class:`RunInfo`, read from the runtime, not
  from what was asked).

Everything that differs between runtimes lives on the :class:`Runtime`
subclass (labels, calibration statistics, accuracy control, notes, the
description of its INT8 scheme); callers never test a runtime's name.
The torch side (a drop-in for a segmentor's ``encode_decode``) is
:class:`repseg.deploy.forward.TorchForward`, outside this folder.
"""
import concurrent.futures
import dataclasses
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ...errors import BackendError, UsageError, opt
from .record import RECORD_KEY, ModelRecord, read_record  # noqa: F401

#: precisions a runtime may run a model in
PRECISIONS = ('fp32', 'bf16', 'int8')
#: the calibration statistic every runtime has and repseg defaults to
DEFAULT_CALIB_METHOD = 'minmax'
#: how a model is compiled: one request at a time with every thread
#: ('latency'), or several requests in flight ('throughput')
MODES = ('latency', 'throughput')


def log(message: str) -> None:
    """Say ``message`` where the caller's messages go: mmengine's current
    logger when the training stack is loaded (the tools), else standard
    error."""
    mm_logging = sys.modules.get('mmengine.logging')
    if mm_logging is not None:
        mm_logging.print_log(message, logger='current')
    else:
        print(message, file=sys.stderr)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


#: the node names of a squeeze-and-excitation in an exported graph (the
#: module path ``...se_layer...``): INT8 leaves them in float. Measured on
#: the demo's A0 with SE (300 iterations, seed 0, OpenVINO, no
#: equalization): 62.9% argmax agreement with fp32 with the SE quantized,
#: 76.7% with it in float; the gate multiplies every channel, so its
#: rounding error reaches the whole block output, and its pool and 1x1
#: convs on a (N, C, 1, 1) map cost nothing to run in float
SE_NODES = 'se_layer'


def default_threads() -> int:
    """Threads a runtime uses when none are given: ``OMP_NUM_THREADS``
    when set (as torch reads it, so PyTorch and the runtimes compare like
    with like), else the CPUs this process may run on."""
    env = os.environ.get('OMP_NUM_THREADS', '')
    if env.isdigit() and int(env) > 0:
        return int(env)
    return available_cpus()


def option(default: Any, help: str, choices: Optional[Sequence] = None,
           flag: Optional[str] = None, metavar: Optional[str] = None):
    """One of a runtime's own quantization settings: a field of its
    :class:`RuntimeOptions` dataclass (``Runtime.own_options``) with its
    default, a one-sentence ``help`` (the tools' ``--help`` and the
    report say it), the values it takes (``choices``, checked when the
    options are made), the tools' ``flag`` where it is not ``--NAME``
    (e.g. ``'--full-bias-correction'`` for a switch that is on by default)
    and the ``metavar`` of a list's items."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, choices=tuple(choices) if choices else None, flag=flag,
        metavar=metavar))


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """A runtime's own quantization settings, one field per setting (made
    with :func:`option`): the base of ``Runtime.own_options``, which has
    none. Every setting is checked when the object is made (a value not
    in its ``choices``, a wrong type: :class:`UsageError`); lists become
    tuples."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            kind = type(f.default)
            ok = f.default is None or (
                isinstance(value, kind) if kind is not float else
                isinstance(value, (int, float)))
            choices = f.metadata.get('choices')
            if not ok or (choices and (
                    value not in choices if not isinstance(value, tuple)
                    else not set(value) <= set(choices))):
                want = (' or '.join(map(repr, choices)) if choices else
                        f'a {kind.__name__}')
                raise UsageError(f'{opt(f.name, value)} is not a value of '
                                 f'this setting: give {want}')

    @classmethod
    def settings(cls) -> List[dataclasses.Field]:
        """The settings (dataclass fields: ``name``, ``default``,
        ``metadata['help']`` ...)."""
        return list(dataclasses.fields(cls))

    @classmethod
    def of(cls, values: Mapping[str, Any],
           owner: str = '') -> 'RuntimeOptions':
        """The settings of ``values`` (a mapping of any runtimes'
        settings by name) that are this runtime's; the others are left
        at their defaults. ``owner`` (the runtime's label) starts the
        message of a bad value."""
        try:
            return cls(**{f.name: values[f.name] for f in cls.settings()
                          if f.name in values})
        except UsageError as e:
            if not owner:
                raise
            raise UsageError(f'{owner}: {e.args[0]}') from None

    def to_dict(self) -> dict:
        """``{name: value}`` (tuples as lists, as JSON has them)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class QuantOptions:
    """Post-training quantization settings: what every runtime has, and
    each runtime's own settings by name (``runtime_options``), which it
    reads as its typed ``Runtime.own_options`` object
    (:meth:`Runtime.options_of`); :func:`repseg.deploy.runtimes
    .select_runtimes` refuses, before any data is read, a setting that
    fits none of the runtimes.

    Args:
        calib_method (str): the calibration statistic of the activation
            ranges, the same for every runtime that has it (see each
            runtime's ``calibration_methods``): 'minmax' (the smallest and
            largest value over all calibration inputs; every runtime),
            'mean_minmax' (the mean over inputs of each input's extremes:
            NNCF's own default, which clips the rarer large activations),
            'entropy' and 'percentile' (ONNX Runtime).
        max_drop (float or None): the largest mIoU drop (points, 0-100) on
            the control set that accuracy control may leave (runtimes with
            ``accuracy_control``: they keep the layers that cost most in
            float until the drop is within it).
        runtime_options (dict): the runtimes' own settings by name (e.g.
            ONNX Runtime's ``reduce_range``, OpenVINO's ``preset``: each
            runtime's ``own_options`` lists its own, with defaults and
            help); a setting left out has its default.
    """
    calib_method: str = DEFAULT_CALIB_METHOD
    max_drop: Optional[float] = None
    runtime_options: Mapping[str, Any] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass
class ControlSet:
    """The images accuracy control validates candidate INT8 models on
    (neither calibration nor evaluation images): ``items`` go to
    ``metric(model, items)``, which returns the mIoU (0-100) of a
    :class:`RuntimeModel`."""
    items: list
    metric: Callable[['RuntimeModel', list], float]
    name: str = ''


@dataclasses.dataclass
class RunInfo:
    """What a loaded model really runs (read back from the runtime).

    Args:
        runtime (str): the runtime's registry name.
        file (str): the model file.
        precision (str): what the runtime runs the convolutions in
            ('fp32', 'bf16', 'int8').
        precision_asked (str or None): what the caller asked for (None:
            the file as written).
        kernels (str): a short description of what executes them.
        threads (int): threads in all (streams x threads per stream),
            as the runtime was set up.
        streams (int): parallel execution streams.
        requests (int): requests that can be in flight at once
            (:meth:`RuntimeModel.submit`).
        mode (str): 'latency' or 'throughput'.
        float_layers (list): convolutions and matrix products of an INT8
            model that stayed in float, by name.
        record (ModelRecord or None): the file's record (what model it
            is and its inference recipe: :mod:`.record`).
        input_size (list or None): [H, W] of a fixed-size file, None when
            H and W are dynamic.
        precision_hint (str or None): the inference precision the runtime
            was told to use for float parts, where it has such a setting.
    """
    runtime: str
    file: str = ''
    precision: str = 'fp32'
    precision_asked: Optional[str] = None
    kernels: str = ''
    threads: Optional[int] = None
    streams: int = 1
    requests: int = 1
    mode: str = 'latency'
    float_layers: List[str] = dataclasses.field(default_factory=list)
    record: Optional[ModelRecord] = None
    input_size: Optional[List[int]] = None
    precision_hint: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.record, dict):   # its to_dict() form
            self.record = ModelRecord.from_dict(self.record)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d['record'] = self.record.to_dict() if self.record else None
        return d


class RuntimeModel:
    """A model file loaded in a runtime: ``model(x)`` maps a normalized
    float32 image batch ``(N, 3, H, W)`` to logits ``(N, num_classes, H,
    W)`` (an array the caller owns); :meth:`submit` starts one without
    waiting (up to ``info.requests`` run at once).

    Args:
        run: ``run(x) -> logits``, synchronous.
        info (RunInfo): what runs.
        submit: ``submit(x) -> Future`` of the runtime's own asynchronous
            call; default: ``run`` on a pool of ``info.requests`` threads.
        close: releases the runtime's resources (optional).
        labels: ``labels(x) -> (N, H, W)`` integer class map, the argmax over
            the logits' classes computed inside the runtime (a model loaded
            with ``labels=True``); None: :meth:`argmax` computes it from
            the logits.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray],
                 info: RunInfo,
                 submit: Optional[Callable[[np.ndarray],
                                           concurrent.futures.Future]] = None,
                 close: Optional[Callable[[], None]] = None,
                 labels: Optional[Callable[[np.ndarray],
                                           np.ndarray]] = None):
        self._run = run
        self._submit = submit
        self._close = close
        self._labels = labels
        self._pool = None
        self.info = info

    @property
    def has_labels(self) -> bool:
        """Whether the runtime computes the class map itself."""
        return self._labels is not None

    def argmax(self, x: np.ndarray) -> np.ndarray:
        """The class map ``(N, H, W)`` (int) of ``x``: the runtime's own
        argmax where it has one (numpy's over 19 x 128 x 256 logits takes as
        long as the A0 network itself on a 2-core CPU), else numpy's (first
        maximum on ties in both)."""
        x = np.ascontiguousarray(x, np.float32)
        if self._labels is not None:
            return np.array(self._labels(x), copy=True)
        return self(x).argmax(1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.array(self._run(np.ascontiguousarray(x, np.float32)),
                        copy=True)

    def submit(self, x: np.ndarray) -> concurrent.futures.Future:
        """Start ``self(x)`` and return its future (several may be in
        flight: ``info.requests``)."""
        x = np.ascontiguousarray(x, np.float32)
        if self._submit is not None:
            return self._submit(x)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max(1, self.info.requests), thread_name_prefix='repseg-run')
        return self._pool.submit(self.__call__, x)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._close is not None:
            self._close()

    def __repr__(self) -> str:
        i = self.info
        return (f'RuntimeModel({i.runtime}, {i.file!r}, '
                f'precision={i.precision!r})')


class Runtime:
    """One inference runtime (subclasses: one module each, registered in
    :mod:`repseg.deploy.runtimes`). Everything the tools need to know
    about a runtime is an attribute or a method here."""

    #: key used by the tools (``--backend NAME``) and in reports
    name: str = ''
    #: what users call it
    label: str = ''
    #: suffix of its model files
    suffix: str = ''
    #: what makes its INT8 models, when that is not the runtime itself
    quantizer: str = ''
    #: Python packages it needs (imported by :meth:`require`, never at
    #: module import)
    packages: Sequence[str] = ()
    #: calibration statistics its quantizer has
    #: (``QuantOptions.calib_method``), each with a short explanation
    calibration_methods: Dict[str, str] = {}
    #: the precisions it runs on some CPU (:meth:`precisions`: on this one)
    supported_precisions: Sequence[str] = ('fp32', 'int8')
    #: whether :meth:`quantize` honours ``QuantOptions.max_drop`` with a
    #: :class:`ControlSet`
    accuracy_control: bool = False
    #: its own quantization settings: a frozen dataclass subclassing
    #: :class:`RuntimeOptions` (fields made with :func:`option`: name,
    #: default, help, choices), read with :meth:`options_of`; the tools
    #: make their flags, the report its lines from it. A non-default value
    #: of a setting no runtime of a run has is refused
    own_options: type = RuntimeOptions
    #: whether :meth:`load` takes ``labels=True`` (the class map computed in
    #: the graph beside the logits: :meth:`RuntimeModel.argmax`)
    argmax_in_graph: bool = False

    @classmethod
    def described(cls) -> str:
        """'OpenVINO (NNCF)': the label with its quantizer."""
        return f'{cls.label} ({cls.quantizer})' if cls.quantizer else \
            cls.label

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

    def options_of(self, options: Optional[QuantOptions] = None
                   ) -> RuntimeOptions:
        """This runtime's own settings in ``options`` (its
        :attr:`own_options` object; defaults for the ones not given)."""
        values = options.runtime_options if options is not None else {}
        return self.own_options.of(values or {}, self.label)

    def check_options(self, options: QuantOptions) -> None:
        """Refuse a calibration statistic, accuracy control or a value of
        its own settings this runtime's quantizer has not, with one line,
        before any data is read (another runtime's own settings are left
        out for this one by :func:`repseg.deploy.runtimes.options_for`)."""
        self.options_of(options)
        method = options.calib_method
        if method not in self.calibration_methods:
            raise UsageError(
                f'{opt("calib_method", method)}: {self.label} calibrates '
                f'with {" or ".join(self.calibration_methods)}; choose one '
                f'of them (or leave {self.label} out of '
                f'{opt("backend", None)})')
        if options.max_drop is not None and not self.accuracy_control:
            raise UsageError(
                f'{self.label} has no accuracy control: '
                f'{opt("max_drop", options.max_drop)} needs a runtime that '
                'has it')

    def quant_label(self, options: QuantOptions) -> str:
        """How this runtime's INT8 models are made, for report labels
        ('QDQ, per-channel, minmax' and the like)."""
        return options.calib_method

    def notes(self, isa: str, options: QuantOptions) -> List[str]:
        """What a reader of this runtime's INT8 figures on a CPU whose
        vector ISA is ``isa`` should know (e.g. saturating kernels)."""
        return []

    def precisions(self) -> Sequence[str]:
        """The precisions this runtime can run on this CPU."""
        return tuple(self.supported_precisions)

    def from_onnx(self, onnx_path: str, out: str) -> str:
        """Write the runtime's own fp32 model file ``out`` (``self.suffix``)
        from an exported fp32 ONNX file (checked as the runtime checks
        its files); returns ``out``."""
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

    def load(self, path: str, precision: Optional[str] = None,
             threads: Optional[int] = None, mode: str = 'latency',
             cache_dir: Optional[str] = None) -> RuntimeModel:
        """Run the model file ``path``: ``None`` runs it as written (float
        parts in fp32); 'fp32' or 'int8' does the same and checks that the
        file is of that precision; 'bf16' asks the runtime to compute in
        bf16 (refused where it or the CPU has none). ``threads`` in all
        (default :func:`default_threads`); ``mode`` 'throughput' lets
        several requests run at once (streams x threads per stream =
        ``threads``); ``cache_dir``: where a runtime that compiles models
        keeps them for the next load (others ignore it). A runtime with
        :attr:`argmax_in_graph` also takes ``labels=True``: the class map is
        computed in the graph (:meth:`RuntimeModel.argmax`)."""
        raise NotImplementedError

    def read_info(self, path: str) -> RunInfo:
        """What the model file says of itself, read without compiling it:
        ``runtime``, ``file``, ``precision`` (as written), ``record`` and
        ``input_size`` (for a caller that needs the model's identity and
        recipe but does not run it, e.g. a Ray driver). The default loads
        the model; runtimes override it with a cheaper read."""
        model = self.load(path)
        try:
            info = model.info
            return RunInfo(runtime=self.name, file=path,
                           precision=info.precision, record=info.record,
                           input_size=info.input_size)
        finally:
            model.close()

    def files(self, path: str) -> List[str]:
        """Every file a model at ``path`` consists of."""
        return [path]

    def missing(self, precision: str) -> str:
        """Why ``precision`` cannot run here (for notes and errors)."""
        return (f'{self.label} cannot run {precision} here: it runs '
                f'{", ".join(self.precisions())} on this CPU')

    def _check_load(self, precision: Optional[str], mode: str) -> None:
        if precision is not None:
            if precision not in PRECISIONS:
                raise BackendError(f'precision must be one of {PRECISIONS},'
                                   f' got {precision!r}')
            if precision not in self.precisions():
                raise BackendError(self.missing(precision))
        if mode not in MODES:
            raise UsageError(f'{opt("mode", mode)} is not a mode: choose '
                             f'{" or ".join(MODES)}')


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


__all__ = ['PRECISIONS', 'MODES', 'DEFAULT_CALIB_METHOD', 'QuantOptions',
           'RuntimeOptions', 'option',
           'ControlSet', 'RunInfo', 'RuntimeModel', 'Runtime', 'count_by',
           'available_cpus', 'default_threads', 'SE_NODES', 'log',
           'read_record', 'static_size']
