# Copyright (c) repseg contributors. All rights reserved.
"""OpenVINO (CPU plugin), Intel's runtime: IR files (``.xml`` + ``.bin``)
converted from the exported ONNX, fp32 / bf16 (on CPUs with AVX512_BF16 or
AMX) / INT8 quantized with NNCF (``nncf.quantize``, or
``nncf.quantize_with_accuracy_control`` with a control set).

Models are compiled for latency (one stream, every thread) or for
throughput (OpenVINO's THROUGHPUT hint: it picks the streams and the
number of requests for the model and the cores; several requests in flight
from as many threads), with the inference precision set
explicitly (OpenVINO's CPU default on bf16-capable CPUs is bf16: an fp32
or INT8 request is compiled with f32 float parts).
What ran is read back from the compiled model's runtime graph (per-node
``runtimePrecision`` and ``primitiveType``), not from the request.
"""
import dataclasses
import os
import os.path as osp
import queue
import threading
from typing import List, Optional, Sequence

import numpy as np

from ...errors import BackendError, UsageError
from .base import (RECORD_KEY, ControlSet, QuantOptions, RunInfo, Runtime,
                   RuntimeOptions, SE_NODES, RuntimeModel, available_cpus,
                   count_by, default_threads, log, option, read_record,
                   static_size)

#: runtime-graph layer types that are convolutions or matrix products
_LAYERS = {'Convolution', 'GroupConvolution', 'Deconvolution', 'MatMul',
           'FullyConnected'}
_HINT = dict(fp32='f32', int8='f32', bf16='bf16')
_PRECISION = {'i8': 'int8', 'u8': 'int8', 'bf16': 'bf16', 'f32': 'fp32',
              'f16': 'fp16'}
PRESETS = ('performance', 'mixed')
#: calibration statistics -> NNCF's RangeEstimatorParametersSet names.
#: 'minmax' (repseg's default, as ONNX Runtime's): NNCF's own default for
#: per-tensor activations is 'mean_minmax', which on the demo's trained A0
#: (RepVGG seed 0) gave 96.19% argmax agreement with fp32 against 97.68%
#: with 'minmax' (docs/deployment.md has the table).
_CALIBRATION = dict(minmax='MINMAX', mean_minmax='MEAN_MINMAX')


@dataclasses.dataclass(frozen=True)
class OpenVINOOptions(RuntimeOptions):
    """OpenVINO's own quantization settings (NNCF's)."""
    preset: str = option(
        PRESETS[0], "NNCF's preset: symmetric activations and weights "
        '(performance) or asymmetric activations (mixed).', choices=PRESETS)
    fast_bias_correction: bool = option(
        True, "NNCF's bias correction: the fast one (the default), or with "
        'its flag the full one (slower, sometimes more accurate).',
        flag='--full-bias-correction')
    ignored_types: Sequence[str] = option(
        ('MatMul', ), 'Operation types NNCF leaves in float: by default '
        "the exact adaptive pooling products of PSPNet's pyramid (quantized, "
        'OpenVINO cannot compile them at sizes whose bins are unequal); give '
        'none to quantize everything.', metavar='TYPE')


_TABLES = threading.Lock()
_tables_built = False


def build_type_tables(ov) -> None:
    """Build pyopenvino's numpy type tables now, on this thread, once per
    process (before any model runs on several threads).

    The bindings keep them in function-local statics (C++) of ``py::dtype``
    objects, built on first use by code that runs Python with the static's
    initialization guard held: when two threads use them for the first time
    at once (e.g. the first two images of a pipelined tools/infer.py run,
    both copying their input into a request's tensor), one waits on the
    guard holding the GIL while the other, inside the guard, waits for the
    GIL, and the process hangs for good (observed with OpenVINO 2026.4:
    threads in ``data_dispatcher.py`` ``tensor.data[:] = inputs[:]``, one in
    ``__cxa_guard_acquire``; 7 of 10 runs of the threaded first use hung
    with a short GIL switch interval, 0 of 100 after this)."""
    global _tables_built
    with _TABLES:
        if _tables_built:
            return
        for dtype in (np.float32, np.int32, np.int64, np.uint8):
            tensor = ov.Tensor(np.zeros((1, ), dtype))   # numpy -> OpenVINO
            np.asarray(tensor.data)                       # OpenVINO -> numpy
        _tables_built = True


def _request_pool(compiled, requests: int):
    """``run(x, output=0)``: ``x`` through one of ``requests`` infer
    requests that is free (waiting for one otherwise), the output copied
    out before the request is handed on; safe from any number of threads.

    The one way repseg runs an OpenVINO model. ``submit`` is these calls on
    a pool of threads (:class:`RuntimeModel`), not an ``AsyncInferQueue``:
    the queue's ``start_async`` is not safe from several threads (two
    callers can take the same idle request, and one future then never
    completes: 3 of 15 runs of 6 threads calling at once hung with it)."""
    idle = queue.SimpleQueue()   # the requests not running now
    for _ in range(requests):
        idle.put(compiled.create_infer_request())

    def run(x: np.ndarray, output: int = 0) -> np.ndarray:
        req = idle.get()
        try:
            req.infer({0: x})
            return req.get_output_tensor(output).data.copy()
        finally:
            idle.put(req)

    return run


def _type_name(value) -> str:
    """'f32', 'bf16', ... of an OpenVINO element type (or its string)."""
    name = getattr(value, 'get_type_name', None)
    return name() if callable(name) else str(value)


def _weights_file(xml: str) -> str:
    return osp.splitext(xml)[0] + '.bin'


def runtime_layers(compiled) -> List[dict]:
    """``name``, ``type``, ``precision`` ('int8', 'bf16', 'fp32') and
    ``kernel`` (the CPU plugin's primitive, e.g. 'brgconv_avx512_amx_I8')
    of every convolution and matrix product of a compiled model, as its
    runtime graph says they run."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()

        def get(key):
            v = info[key] if key in info else ''
            return v.astype(str) if hasattr(v, 'astype') else str(v)

        kind = get('layerType')
        if kind in _LAYERS:
            prec = get('runtimePrecision').lower()
            out.append(dict(name=op.get_friendly_name(), type=kind,
                            precision=_PRECISION.get(prec, prec),
                            kernel=get('primitiveType')))
    return out


def ran_precision(layers: List[dict]) -> str:
    """The precision of a compiled model's convolutions: 'int8' when any
    runs in INT8, else the precision they share (e.g. 'bf16', 'fp32')."""
    convs = [la for la in layers if 'Convolution' in la['type']] or layers
    precs = {la['precision'] for la in convs}
    if 'int8' in precs:
        return 'int8'
    return precs.pop() if len(precs) == 1 else '/'.join(sorted(precs))


class OpenVINO(Runtime):
    name = 'openvino'
    label = 'OpenVINO'
    quantizer = 'NNCF'
    suffix = '.xml'
    packages = ('openvino', )
    calibration_methods = dict(
        minmax='the extremes over all calibration images',
        mean_minmax="the mean of each image's extremes, NNCF's own default")
    accuracy_control = True
    supported_precisions = ('fp32', 'bf16', 'int8')
    own_options = OpenVINOOptions
    argmax_in_graph = True

    def __init__(self):
        self._core = None

    def quant_label(self, options: QuantOptions) -> str:
        label = (f'NNCF, {self.options_of(options).preset} preset, '
                 f'{options.calib_method}')
        if options.max_drop is not None:
            label += f', accuracy control <= {options.max_drop:g} mIoU'
        return label

    @property
    def core(self):
        if self._core is None:
            ov = self.require()
            build_type_tables(ov)
            self._core = ov.Core()
        return self._core

    def files(self, path: str) -> List[str]:
        return [path, _weights_file(path)]

    def precisions(self):
        caps = self.core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
        return ('fp32', 'bf16', 'int8') if 'BF16' in caps else ('fp32',
                                                                 'int8')

    def _save(self, model, out: str) -> str:
        """Write IR ``out`` + its ``.bin`` atomically, in fp32 (OpenVINO's
        ``save_model`` would compress weights to fp16 by default)."""
        ov = self.require()
        if not out.endswith('.xml'):
            raise UsageError(f'OpenVINO IR is written as NAME.xml + NAME.bin;'
                             f' name the output with .xml, got {out!r}')
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        tmp = out[:-4] + '.tmp.xml'
        ov.save_model(model, tmp, compress_to_fp16=False)
        os.replace(_weights_file(tmp), _weights_file(out))
        os.replace(tmp, out)
        return out

    def from_onnx(self, onnx_path: str, out: str) -> str:
        """IR of the ONNX file, with its record (ONNX metadata, which the
        converter drops) in the IR's ``rt_info``."""
        ov = self.require()
        import onnx
        model = ov.convert_model(onnx_path)
        meta = {p.key: p.value for p in onnx.load(
            onnx_path, load_external_data=False).metadata_props}
        if RECORD_KEY in meta:
            model.set_rt_info(meta[RECORD_KEY], [RECORD_KEY, 'record'])
        return self._save(model, out)

    def read(self, path: str):
        """The IR at ``path`` as an ``openvino.Model``."""
        if not osp.isfile(path):
            raise BackendError(f'OpenVINO IR {path!r} does not exist')
        if not osp.isfile(_weights_file(path)):
            raise BackendError(
                f'the weights of the OpenVINO IR {path!r} are missing: '
                f'{_weights_file(path)!r} must lie next to it (an IR is the '
                '.xml and the .bin of the same name; copy both)')
        return self.core.read_model(path)

    def read_info(self, path: str) -> RunInfo:
        """The IR's record, input size and precision (any FakeQuantize:
        INT8), read without compiling it."""
        model = self.read(path)
        record, size = _record_and_size(model, path)
        int8 = any(op.get_type_name() == 'FakeQuantize'
                   for op in model.get_ops())
        return RunInfo(runtime=self.name, file=path,
                       precision='int8' if int8 else 'fp32', record=record,
                       input_size=size)

    def with_argmax(self, model):
        """``model`` with a second output: the class map (TopK k=1 over
        the classes, the first maximum on ties as numpy's argmax; int32
        ``(N, 1, H, W)``), so that a caller that wants labels neither
        copies the logits out nor runs numpy's argmax over them."""
        ov = self.require()
        try:
            from openvino import opset13 as ops
        except ImportError:   # older releases
            from openvino.runtime import opset13 as ops
        result = model.get_results()[0]
        top = ops.topk(result.input_value(0), np.int64(1), 1, 'max', 'value',
                       index_element_type='i32', stable=True)
        return ov.Model([result, ops.result(top.output(1))],
                        model.get_parameters(), model.get_friendly_name())

    def compile(self, model, precision: str = 'fp32',
                threads: Optional[int] = None, mode: str = 'latency',
                cache_dir: Optional[str] = None):
        """Compile an ``openvino.Model`` for the CPU with ``threads`` in
        all (default :func:`~.base.default_threads`): one stream and the
        latency hint, or the throughput hint (OpenVINO picks the streams);
        the inference precision of ``precision`` (float parts of an INT8
        model in fp32)."""
        self._check_load(precision, mode)
        threads = threads or default_threads()
        if threads < 2:
            # one thread is one stream: the throughput hint then only costs
            # (measured: B1g2 INT8 at 713, 0.86x the latency mode's img/s)
            mode = 'latency'
        config = {'INFERENCE_NUM_THREADS': threads,
                  'PERFORMANCE_HINT': mode.upper(),
                  'INFERENCE_PRECISION_HINT': _HINT[precision]}
        if mode == 'latency':
            config['NUM_STREAMS'] = 1
        if threads < available_cpus():
            # fewer threads than this process's CPUs: other processes (shards,
            # Ray actors) share them, and OpenVINO's pinning would put every
            # process's threads on the same first cores (measured: two
            # 1-thread shards on 2 cores, 18.6 img/s each pinned, 35 not)
            config['ENABLE_CPU_PINNING'] = False
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            config['CACHE_DIR'] = cache_dir
        try:
            return self.core.compile_model(model, 'CPU', config)
        except RuntimeError as e:
            lines = [s for s in str(e).splitlines() if s.strip()]
            raise BackendError(
                f'OpenVINO could not compile the model for the CPU: '
                f'{(lines[-1] if lines else "")[:300]}') from None

    def wrap(self, compiled, path: str = '', model=None,
             precision: Optional[str] = None,
             mode: str = 'latency') -> RuntimeModel:
        """A compiled model as a :class:`RuntimeModel`: one infer request
        (latency) or OpenVINO's optimal number of them (throughput), every
        call (``model(x)``, :meth:`~RuntimeModel.argmax`,
        :meth:`~RuntimeModel.submit` on the model's threads) on a free one
        (:func:`_request_pool`); ``model``: the ``openvino.Model`` it was
        compiled from (for its record). A second output
        (:meth:`with_argmax`) is the class map of
        :meth:`RuntimeModel.argmax`."""
        layers = runtime_layers(compiled)
        ran = ran_precision(layers)
        streams = requests = 1
        if mode == 'throughput':
            streams = int(compiled.get_property('NUM_STREAMS'))
            requests = int(compiled.get_property(
                'OPTIMAL_NUMBER_OF_INFER_REQUESTS'))
        kernels = count_by(la['kernel'] for la in layers
                           if 'Convolution' in la['type'])
        info = RunInfo(
            runtime=self.name, file=path, precision=ran,
            precision_asked=precision,
            precision_hint=_type_name(
                compiled.get_property('INFERENCE_PRECISION_HINT')),
            kernels=', '.join(f'{k} x{n}' for k, n in kernels.items()),
            threads=int(compiled.get_property('INFERENCE_NUM_THREADS')),
            streams=streams, requests=requests, mode=mode,
            float_layers=[la['name'] for la in layers
                          if la['precision'] != 'int8'] if ran == 'int8'
            else [])
        if model is not None:   # the IR: its record and input size
            info.record, info.input_size = _record_and_size(model, path)
        with_labels = len(getattr(compiled, 'outputs', ())) > 1
        run = _request_pool(compiled, requests)
        return RuntimeModel(run, info, labels=(
            lambda x: run(x, 1)[:, 0]) if with_labels else None)

    def load(self, path: str, precision: Optional[str] = None,
             threads: Optional[int] = None, mode: str = 'latency',
             cache_dir: Optional[str] = None,
             labels: bool = False) -> RuntimeModel:
        ir = self.read(path)
        compiled = self.compile(self.with_argmax(ir) if labels else ir,
                                precision or 'fp32', threads, mode,
                                cache_dir)
        ran = str(compiled.get_property('PERFORMANCE_HINT')).lower()
        model = self.wrap(compiled, path, ir, precision,
                          'throughput' if 'throughput' in ran else 'latency')
        ran = model.info.precision
        if precision and (precision == 'int8') != (ran == 'int8'):
            raise UsageError(
                f'{path!r} runs in {ran} but {precision} was asked for: '
                'load an INT8 IR with int8, an fp32 IR with fp32 or bf16')
        if precision == 'bf16' and ran != 'bf16':
            raise BackendError(f'OpenVINO was asked for bf16 but compiled '
                               f'{path!r} in {ran}')
        return model

    def missing(self, precision: str) -> str:
        if precision == 'bf16':
            from ...ops.cpu import cpu_vector_isa
            return (f'this CPU ({cpu_vector_isa()}) has no AVX512_BF16 or '
                    'AMX: OpenVINO would silently run fp32 instead of bf16. '
                    'Run fp32 or INT8 here, or bf16 on a CPU that has them')
        return super().missing(precision)

    def quantize(self, fp32_path: str, out: str,
                 inputs: List[np.ndarray],
                 options: Optional[QuantOptions] = None,
                 control: Optional[ControlSet] = None) -> dict:
        """NNCF post-training quantization of the IR ``fp32_path``
        calibrated on ``inputs``; with ``options.max_drop`` and
        ``control``, ``nncf.quantize_with_accuracy_control`` on the control
        set (absolute mIoU drop). Returns ``file`` and, with accuracy
        control, the control set's name and fp32 / INT8 mIoU."""
        o = options or QuantOptions()
        self.check_options(o)
        own = self.options_of(o)
        if o.max_drop is not None and control is None:
            raise UsageError('accuracy control needs a control set')
        if not inputs:
            raise UsageError('quantization needs at least one calibration '
                             'input')
        try:
            import nncf
        except Exception as e:  # noqa: B902
            raise BackendError(
                f'INT8 with OpenVINO needs NNCF, which cannot be imported '
                f'here ({type(e).__name__}: {str(e)[:200]}): pip install '
                'nncf (or run scripts/install.sh)') from None
        from nncf.quantization.advanced_parameters import \
            AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import \
            RangeEstimatorParametersSet
        model = self.read(fp32_path)
        ranges = getattr(RangeEstimatorParametersSet,
                         _CALIBRATION[o.calib_method])
        kwargs = dict(
            preset=getattr(nncf.QuantizationPreset, own.preset.upper()),
            subset_size=len(inputs),
            fast_bias_correction=own.fast_bias_correction,
            # the squeeze-and-excitations stay in float (SE_NODES)
            ignored_scope=nncf.IgnoredScope(
                types=list(own.ignored_types), patterns=[f'.*{SE_NODES}.*'],
                validate=False))
        advanced = AdvancedQuantizationParameters(
            activations_range_estimator_params=ranges)
        calib = nncf.Dataset(list(inputs))
        result = dict(file=out)
        if o.max_drop is None:
            q = nncf.quantize(model, calib, advanced_parameters=advanced,
                              **kwargs)
        else:
            scores = []

            def validate(compiled, items):
                score = control.metric(self.wrap(compiled), list(items))
                scores.append(score)
                return score

            log(f'accuracy control: at most {o.max_drop} mIoU points lost '
                f'on {control.name}')
            q = nncf.quantize_with_accuracy_control(
                model, calib, nncf.Dataset(control.items), validate,
                max_drop=o.max_drop, drop_type=nncf.DropType.ABSOLUTE,
                advanced_quantization_parameters=advanced, **kwargs)
            result.update(control=control.name)
        self._save(q, out)
        return result


def _record_and_size(model, path: str = '') -> tuple:
    """The record (:mod:`repseg.deploy.record`) and the fixed input size
    [H, W] (None if dynamic) of an ``openvino.Model`` (read from
    ``path``)."""
    key = [RECORD_KEY, 'record']
    record = read_record(model.get_rt_info(key).astype(str)
                         if model.has_rt_info(key) else None, path)
    size = static_size([d.get_length() if d.is_static else -1
                        for d in model.input(0).get_partial_shape()])
    return record, size


__all__ = ['OpenVINO', 'OpenVINOOptions', 'runtime_layers', 'ran_precision',
           'PRESETS']
