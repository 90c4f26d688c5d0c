# Copyright (c) repseg contributors. All rights reserved.
"""Which of ONNX Runtime's kernels runs the INT8 convolutions, decided at
run time on the CPU at hand.

ONNX Runtime runs a QLinearConv whose INT8 weights are symmetric (every
zero point 0: what :func:`repseg.deploy.quantize.quantize_onnx` writes,
and what runs best on most CPUs) with its indirect "ConvSym" kernels
(AVX2 / AVX-512 / VNNI), and any other QLinearConv as im2col + QGEMM, whose
kernels use AMX-INT8 tiles where the CPU has them. Measured on a 2-core
AVX-512 VNNI + AMX CPU, one thread, PSPNet-B1g2 at 713x713: QGEMM 0.88 s
vs ConvSym 1.59 s; with AMX hidden ConvSym is about 10% faster.

So the faster route is measured once per process on a small convolution
(:func:`probe_routes`); where QGEMM wins, :func:`to_gemm_route` re-expresses
each symmetric weight tensor exactly in memory before the session is built:
``q - 1`` with zero point ``-1`` dequantizes to the same ``q * scale`` (the
symmetric range [-127, 127] leaves room for it). The file on disk stays the
portable symmetric model.
"""
import time
from functools import lru_cache
from typing import Dict, List, Tuple, Union

import numpy as np
from mmengine.logging import print_log

from ..errors import UsageError, opt

#: 'auto' (measure), 'convsym' (as written) or 'gemm' (zero point -1)
ROUTES = ('auto', 'convsym', 'gemm')

#: QGEMM must beat ConvSym by this factor on the probe to be chosen (AMX:
#: ~3x on the probe; without AMX it is slower)
GEMM_MIN_GAIN = 1.25


def symmetric_conv_weights(model) -> List[Tuple[object, object]]:
    """(weight, zero point) initializer pairs of ``model``'s INT8 conv
    weights that ONNX Runtime would run with ConvSym kernels: 4-D INT8
    initializers whose zero points are all 0 and values within
    [-127, 127], consumed by a QLinearConv or dequantized (QDQ format) into
    a Conv's weight input."""
    from onnx import TensorProto, numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    conv_weights = {n.input[1] for n in model.graph.node
                    if n.op_type == 'Conv' and len(n.input) > 1}
    candidates = []
    for n in model.graph.node:
        if n.op_type == 'QLinearConv' and len(n.input) > 5:
            candidates.append((n.input[3], n.input[5]))
        elif (n.op_type == 'DequantizeLinear' and len(n.input) > 2
              and n.output[0] in conv_weights):
            candidates.append((n.input[0], n.input[2]))
    pairs = []
    for w_name, zp_name in candidates:
        w, zp = inits.get(w_name), inits.get(zp_name)
        if (w is None or zp is None or len(w.dims) != 4
                or w.data_type != TensorProto.INT8
                or zp.data_type != TensorProto.INT8):
            continue
        if (numpy_helper.to_array(zp) == 0).all() and \
                numpy_helper.to_array(w).min() >= -127:
            pairs.append((w, zp))
    return pairs


def to_gemm_route(model) -> int:
    """Re-express the symmetric INT8 conv weights of ``model`` (in place)
    as ``q - 1`` with zero point ``-1``: the same dequantized weights, run
    by ONNX Runtime's QGEMM kernels. Returns how many tensors changed."""
    from onnx import numpy_helper
    pairs = symmetric_conv_weights(model)
    for w, zp in pairs:
        q = numpy_helper.to_array(w).astype(np.int16) - 1
        w.CopyFrom(numpy_helper.from_array(q.astype(np.int8), w.name))
        z = numpy_helper.to_array(zp)
        zp.CopyFrom(numpy_helper.from_array(
            np.full(z.shape, -1, np.int8), zp.name))
    return len(pairs)


def _probe_model(zero_point: int, channels: int = 256,
                 size: int = 28) -> bytes:
    """One QLinearConv (3x3, ``channels`` in and out, per-channel weights
    with ``zero_point``) as a serialized ONNX model."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (channels, channels, 3, 3)) + zero_point
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), 'xs'),
        numpy_helper.from_array(np.array(128, np.uint8), 'xz'),
        numpy_helper.from_array(w.astype(np.int8), 'w'),
        numpy_helper.from_array(np.full(channels, 0.01, np.float32), 'ws'),
        numpy_helper.from_array(np.full(channels, zero_point, np.int8),
                                'wz'),
        numpy_helper.from_array(np.array(0.5, np.float32), 'ys'),
        numpy_helper.from_array(np.array(128, np.uint8), 'yz'),
    ]
    node = helper.make_node(
        'QLinearConv', ['x', 'xs', 'xz', 'w', 'ws', 'wz', 'ys', 'yz'], ['y'],
        pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], 'probe',
        [helper.make_tensor_value_info('x', TensorProto.UINT8,
                                       [1, channels, size, size])],
        [helper.make_tensor_value_info('y', TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid('', 13)])
    return model.SerializeToString()


def probe_routes(repeat: int = 10) -> Dict[str, float]:
    """Seconds of one probe convolution (the fastest of ``repeat`` runs,
    one thread) on each route: ``{'convsym': s, 'gemm': s}``."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    x = np.random.default_rng(1).integers(0, 256, (1, 256, 28, 28),
                                          dtype=np.uint8)
    seconds = {}
    for route, zero_point in (('convsym', 0), ('gemm', -1)):
        session = ort.InferenceSession(_probe_model(zero_point), opts,
                                       providers=['CPUExecutionProvider'])
        session.run(None, {'x': x})
        best = float('inf')
        for _ in range(repeat):
            t0 = time.perf_counter()
            session.run(None, {'x': x})
            best = min(best, time.perf_counter() - t0)
        seconds[route] = best
    return seconds


@lru_cache(maxsize=1)
def measured_route() -> Tuple[str, float]:
    """The faster route on this CPU and QGEMM's speed-up over ConvSym on
    the probe (measured once per process)."""
    seconds = probe_routes()
    gain = seconds['convsym'] / seconds['gemm']
    return ('gemm' if gain >= GEMM_MIN_GAIN else 'convsym'), gain


def session_source(path: str, route: str = 'auto') -> Union[str, bytes]:
    """What to build an ONNX Runtime session from for the model at
    ``path`` on ``route``: ``path`` itself when nothing changes (the
    'convsym' route, a model without symmetric INT8 conv weights, or
    'auto' where ConvSym is faster), else the serialized model on the
    QGEMM route."""
    if check_route(route) == 'convsym':
        return path
    import onnx
    model = onnx.load(path)
    if not symmetric_conv_weights(model) or resolve_route(route) != 'gemm':
        return path
    n = to_gemm_route(model)
    why = (f'{measured_route()[1]:.2f}x its ConvSym kernels on a probe '
           'convolution here' if route == 'auto' else f'int8_conv={route!r}')
    print_log(f'{path}: {n} INT8 convolutions on ONNX Runtime\'s QGEMM '
              f'kernels (zero point -1; {why})', logger='current')
    return model.SerializeToString()


def check_route(route: str) -> str:
    """``route`` if it is one of :data:`ROUTES`, else a UsageError."""
    if route not in ROUTES:
        raise UsageError(f'{opt("int8_conv", route)} is not a route of '
                         f'INT8 convolutions: choose one of '
                         f'{", ".join(ROUTES)}')
    return route


def resolve_route(route: str = 'auto') -> str:
    """'convsym' or 'gemm' for ``route`` (one of :data:`ROUTES`; 'auto'
    is what :func:`measured_route` found faster here)."""
    return measured_route()[0] if check_route(route) == 'auto' else route


__all__ = [
    'ROUTES', 'GEMM_MIN_GAIN', 'symmetric_conv_weights', 'to_gemm_route',
    'probe_routes', 'measured_route', 'check_route', 'resolve_route',
    'session_source'
]
