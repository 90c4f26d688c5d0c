# Copyright (c) repseg contributors. All rights reserved.
"""ONNX Runtime (CPU execution provider): the portable runtime. Runs the
exported ONNX file as written; INT8 by ``onnxruntime.quantization``'s
static quantization (QDQ, per-channel symmetric INT8 weights, UINT8
activations). Its CPU provider has no bf16."""
import dataclasses
import os
import os.path as osp
import queue
from typing import List, Optional

import numpy as np

from ...errors import BackendError, UsageError
from ...ops.cpu import seen_isa
from .base import (RECORD_KEY, SE_NODES, ControlSet, QuantOptions, RunInfo,
                   Runtime, RuntimeModel, RuntimeOptions, default_threads,
                   option, read_record, static_size)

#: calibration methods -> onnxruntime's CalibrationMethod names
_CALIBRATION = dict(minmax='MinMax', entropy='Entropy',
                    percentile='Percentile')

_QUANT_OPS = {'QuantizeLinear', 'DequantizeLinear', 'QLinearConv',
              'ConvInteger', 'MatMulInteger', 'QLinearMatMul'}
_LAYER_OPS = {'Conv', 'MatMul', 'Gemm'}


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeOptions(RuntimeOptions):
    """ONNX Runtime's own quantization settings."""
    reduce_range: bool = option(
        False, '7-bit weights, for CPUs without VNNI (AVX2, AVX-512 without '
        'VNNI), whose U8S8 kernels saturate int16 sums.')


def session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op
    threads (default :func:`~.base.default_threads`), running the file as
    written."""
    ort = OnnxRuntime().require()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    return ort.InferenceSession(path, opts,
                                providers=['CPUExecutionProvider'])


def with_argmax(path: str) -> bytes:
    """The ONNX model at ``path`` (serialized) with a second output, the
    class map: ArgMax over the classes, keepdims, the first maximum on ties
    (as numpy's), int64 ``(N, 1, H, W)``."""
    import onnx
    from onnx import helper
    model = onnx.load(path)
    logits = model.graph.output[0].name
    model.graph.node.append(helper.make_node(
        'ArgMax', [logits], ['repseg_labels'], axis=1, keepdims=1,
        select_last_index=0, name='repseg_argmax'))
    model.graph.output.append(helper.make_tensor_value_info(
        'repseg_labels', onnx.TensorProto.INT64, None))
    return model.SerializeToString()


def float_layers(path: str) -> List[str]:
    """Names of the convolutions and matrix products of an ONNX model that
    run in float: in a QDQ model, those whose data input is not
    dequantized INT8 (all of them in an fp32 model)."""
    import onnx
    graph = onnx.load(path, load_external_data=False).graph
    made_by = {o: n for n in graph.node for o in n.output}
    out = []
    for n in graph.node:
        if n.op_type in _LAYER_OPS:
            src = made_by.get(n.input[0])
            if src is None or src.op_type != 'DequantizeLinear':
                out.append(n.name or n.output[0])
    return out


def shape_products(graph) -> List[str]:
    """Names of the matrix products of an ONNX graph with an operand
    computed from the input's shape alone (Shape, then arithmetic on it):
    the bin-averaging matrices of adaptive pooling in a dynamic-H/W export
    (:class:`repseg.deploy.onnx.DynamicAdaptiveAvgPool2d`). Their values
    depend on the input size, so ranges calibrated at one size would clip
    them at another: INT8 leaves these products in float."""
    const = {t.name for t in graph.initializer}
    derived = set()
    for n in graph.node:
        ins = [i for i in n.input if i]
        if n.op_type == 'Shape':
            derived.update(n.output)
        elif n.op_type == 'Constant' or all(i in const for i in ins):
            const.update(n.output)
        elif all(i in const or i in derived for i in ins):
            derived.update(n.output)
    return [n.name for n in graph.node if n.op_type in ('MatMul', 'Gemm')
            and any(i in derived for i in n.input)]


def throughput_streams(threads: int) -> int:
    """Sessions run side by side in throughput mode: one per thread up to 8
    threads, then one per two threads (a fixed rule, not a run-time
    probe)."""
    return threads if threads <= 8 else threads // 2


class OnnxRuntime(Runtime):
    name = 'onnxruntime'
    label = 'ONNX Runtime'
    suffix = '.onnx'
    packages = ('onnxruntime', 'onnx')
    calibration_methods = dict(
        minmax='the extremes over all calibration images',
        entropy='the range that keeps the most information',
        percentile='a high percentile of the values')
    own_options = OnnxRuntimeOptions
    argmax_in_graph = True

    def quant_label(self, options: QuantOptions) -> str:
        return 'QDQ, per-channel' + (', 7-bit weights' if self.options_of(
            options).reduce_range else '') + f', {options.calib_method}'

    def notes(self, isa: str, options: QuantOptions) -> List[str]:
        """On a CPU whose label has no VNNI, ONNX Runtime's U8S8 kernels
        add pairs of products in saturating int16: say so (unless
        ``reduce_range`` avoids it)."""
        if self.options_of(options).reduce_range or \
                'VNNI' in seen_isa(isa):
            return []
        return [f'note: this CPU ({isa}) has no VNNI: ONNX Runtime adds '
                'U8S8 products in saturating int16 pairs here, so the INT8 '
                "accuracy below is this CPU's; reduce_range=True "
                '(tools/quantize.py --reduce-range, 7-bit weights) avoids '
                'the saturation']

    def from_onnx(self, onnx_path: str, out: str) -> str:
        """The ONNX file itself (copied to ``out``), checked with onnx's
        checker."""
        import onnx
        onnx.checker.check_model(onnx.load(onnx_path))
        if osp.abspath(onnx_path) != osp.abspath(out):
            import shutil
            shutil.copyfile(onnx_path, out)
        return out

    def quantize(self, fp32_path: str, out: str,
                 inputs: List[np.ndarray],
                 options: Optional[QuantOptions] = None,
                 control: Optional[ControlSet] = None) -> dict:
        """Static INT8 quantization: QDQ format, per-channel symmetric INT8
        weights, UINT8 activations calibrated on ``inputs``.

        ``options.reduce_range`` quantizes the weights to 7 bits
        ([-64, 64]): on CPUs without VNNI (AVX2, AVX-512 without VNNI)
        ONNX Runtime's U8S8 kernels add pairs of products in saturating
        int16 (255 * 127 * 2 > 32767), and 7-bit weights keep every pair in
        range, at the cost of one bit of weight precision; VNNI kernels do
        not saturate either way. ONNX Runtime has no accuracy control:
        ``options.max_drop`` is refused."""
        o = options or QuantOptions()
        self.check_options(o)
        if not inputs:
            raise UsageError('quantization needs at least one calibration '
                             'input')
        self.require()
        from onnxruntime.quantization import (CalibrationDataReader,
                                              CalibrationMethod, QuantFormat,
                                              QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import \
            quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter(inputs)

            def get_next(self):
                x = next(self.items, None)
                return None if x is None else {'image': x}

        prepared = out + '.pre.onnx'
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
        import onnx
        # the squeeze-and-excitations stay in float (SE_NODES), and so do
        # the products with matrices computed from the input's shape
        # (a dynamic-H/W export's pooling bins: shape_products)
        graph = onnx.load(prepared).graph
        se = [n.name for n in graph.node if SE_NODES in n.name] + \
            shape_products(graph)
        try:
            quantize_static(
                prepared, out, Reader(), quant_format=QuantFormat.QDQ,
                nodes_to_exclude=se,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=self.options_of(o).reduce_range,
                calibrate_method=getattr(CalibrationMethod,
                                         _CALIBRATION[o.calib_method]))
        finally:
            if osp.exists(prepared):
                os.remove(prepared)
        return dict(file=out)

    def read_info(self, path: str) -> RunInfo:
        """The file's record, input size and precision (QDQ nodes: INT8),
        read with ``onnx`` (the graph, not its external weights) without
        making a session."""
        if not osp.isfile(path):
            raise BackendError(f'ONNX model {path!r} does not exist')
        import onnx
        try:
            m = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: B902  (onnx's parse errors vary)
            raise BackendError(f'{path!r} is not a readable ONNX model: '
                               f'{str(e)[:200]}') from None
        meta = {p.key: p.value for p in m.metadata_props}
        dims = [d.dim_value if d.HasField('dim_value') else -1
                for d in m.graph.input[0].type.tensor_type.shape.dim]
        ops = {n.op_type for n in m.graph.node}
        return RunInfo(runtime=self.name, file=path,
                       precision='int8' if ops & _QUANT_OPS else 'fp32',
                       record=read_record(meta.get(RECORD_KEY), path),
                       input_size=static_size(dims))

    def load(self, path: str, precision: Optional[str] = None,
             threads: Optional[int] = None, mode: str = 'latency',
             cache_dir: Optional[str] = None,
             labels: bool = False) -> RuntimeModel:
        """One session with every thread (latency), or
        :func:`throughput_streams` sessions side by side sharing the
        threads (throughput; ``submit`` runs one per free session);
        ``labels``: the graph gets an ArgMax output beside the logits
        (:func:`with_argmax`)."""
        self._check_load(precision, mode)
        info = self.read_info(path)   # as written: precision, record, size
        ran = info.precision
        if precision and precision != ran:
            raise UsageError(
                f'{path!r} is an {ran} model; {self.label} runs it as '
                f'written (asked for {precision})')
        threads = threads or default_threads()
        streams = throughput_streams(threads) if mode == 'throughput' \
            else 1
        per_stream = max(1, threads // streams)
        source = with_argmax(path) if labels else path
        sessions = [session(source, per_stream) for _ in range(streams)]
        s = sessions[0]
        info = dataclasses.replace(
            info, precision_asked=precision,
            kernels='MLAS, CPU execution provider',
            threads=s.get_session_options().intra_op_num_threads * streams,
            streams=streams, requests=streams, mode=mode,
            float_layers=float_layers(path) if ran == 'int8' else [])
        name = s.get_inputs()[0].name
        outs = [o.name for o in s.get_outputs()]
        argmax = (lambda x: run_any(x, outs[1])[:, 0]) if labels else None
        if streams == 1:
            def run_any(x, output=outs[0]):
                return s.run([output], {name: x})[0]

            return RuntimeModel(run_any, info, labels=argmax)
        idle = queue.SimpleQueue()   # the sessions not running now
        for sess in sessions:
            idle.put(sess)

        def run_any(x, output=outs[0]):
            sess = idle.get()
            try:
                return sess.run([output], {name: x})[0]
            finally:
                idle.put(sess)

        # submit: these calls on the model's pool of ``streams`` threads
        return RuntimeModel(run_any, info, labels=argmax)

    def missing(self, precision: str) -> str:
        if precision == 'bf16':
            return ("ONNX Runtime's CPU execution provider has no bf16 (on "
                    'any CPU); OpenVINO has it on CPUs with AVX512_BF16 or '
                    'AMX')
        return super().missing(precision)


__all__ = ['OnnxRuntime', 'OnnxRuntimeOptions', 'session', 'float_layers',
           'shape_products', 'throughput_streams']
