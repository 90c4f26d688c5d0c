# Copyright (c) repseg contributors. All rights reserved.
"""ONNX Runtime (CPU execution provider): the portable runtime. Runs the
exported ONNX file as written; INT8 by ``onnxruntime.quantization``'s
static quantization (QDQ, per-channel symmetric INT8 weights, UINT8
activations). Its CPU provider has no bf16."""
import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch

from ...errors import BackendError, UsageError, opt
from .base import (RECORD_KEY, ControlSet, QuantOptions, Runtime,
                   RuntimeModel, read_record, static_size)

#: calibration methods -> onnxruntime's CalibrationMethod names
CALIBRATION_METHODS = dict(minmax='MinMax', entropy='Entropy',
                           percentile='Percentile')

_QUANT_OPS = {'QuantizeLinear', 'DequantizeLinear', 'QLinearConv',
              'ConvInteger', 'MatMulInteger', 'QLinearMatMul'}
_LAYER_OPS = {'Conv', 'MatMul', 'Gemm'}


def session(path: str):
    """An ONNX Runtime CPU session of ``path`` with as many threads as
    torch uses (so PyTorch and ONNX Runtime timings compare like with
    like), running the file as written."""
    ort = OnnxRuntime().require()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(path, opts,
                                providers=['CPUExecutionProvider'])


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


class OnnxRuntime(Runtime):
    name = 'onnxruntime'
    label = 'ONNX Runtime'
    suffix = '.onnx'
    packages = ('onnxruntime', 'onnx')
    calibration_methods = tuple(CALIBRATION_METHODS)

    def from_onnx(self, onnx_path: str, out: str) -> str:
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
        if o.max_drop is not None:
            raise UsageError(
                f'{self.label} has no accuracy control: '
                f'{opt("max_drop", o.max_drop)} needs '
                f'{opt("backend", "openvino")}')
        self.check_method(o.method)
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
        try:
            quantize_static(
                prepared, out, Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, reduce_range=o.reduce_range,
                calibrate_method=getattr(CalibrationMethod,
                                         CALIBRATION_METHODS[o.method]))
        finally:
            if osp.exists(prepared):
                os.remove(prepared)
        return dict(file=out)

    def load(self, path: str, precision: Optional[str] = None
             ) -> RuntimeModel:
        if precision:
            self._check_precision(precision)
        if not osp.isfile(path):
            raise BackendError(f'ONNX model {path!r} does not exist')
        s = session(path)
        import onnx
        ops = {n.op_type for n in onnx.load(
            path, load_external_data=False).graph.node}
        ran = 'int8' if ops & _QUANT_OPS else 'fp32'
        if precision and precision != ran:
            raise UsageError(
                f'{path!r} is an {ran} model; {self.label} runs it as '
                f'written (asked for {precision})')
        floats = float_layers(path) if ran == 'int8' else []
        meta = s.get_modelmeta().custom_metadata_map
        info = dict(runtime=self.name, file=path, precision=ran,
                    kernels='MLAS, CPU execution provider',
                    threads=s.get_session_options().intra_op_num_threads,
                    float_layers=floats,
                    record=read_record(meta.get(RECORD_KEY)),
                    input_size=static_size(s.get_inputs()[0].shape))
        name = s.get_inputs()[0].name
        return RuntimeModel(lambda x: s.run(None, {name: x})[0], info)

    def precisions(self):
        return ('fp32', 'int8')

    def missing(self, precision: str) -> str:
        if precision == 'bf16':
            return ("ONNX Runtime's CPU execution provider has no bf16 (on "
                    'any CPU); OpenVINO has it on CPUs with AVX512_BF16 or '
                    'AMX')
        return super().missing(precision)


__all__ = ['OnnxRuntime', 'session', 'float_layers', 'CALIBRATION_METHODS']
