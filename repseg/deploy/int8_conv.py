# Copyright (c) repseg contributors. All rights reserved.
"""Which of ONNX Runtime's kernels runs each INT8 convolution, decided at
run time on the CPU at hand.

ONNX Runtime runs a QLinearConv whose INT8 weights are symmetric (every
zero point 0: what :func:`repseg.deploy.quantize.quantize_onnx` writes,
and the portable choice) with its indirect "ConvSym" kernels (AVX2 /
AVX-512 / VNNI), and any other QLinearConv as im2col + QGEMM, whose kernels
use AMX-INT8 tiles where the CPU has them. Which is faster depends on the
CPU and on the convolution: measured on a 2-core AVX-512 VNNI + AMX CPU,
one thread, QGEMM ran PSPNet-B1g2's stage-3 convs at 713x713 1.9x faster
and its bottleneck 2.9x faster, but PSPNet-A0's bottleneck at 512x1024
2.4x slower (its im2col buffer outgrows the caches); with AMX hidden,
ConvSym wins nearly everywhere.

So :func:`plan_routes` times every distinct convolution of a model on both
routes, alone at its own shape (a one-node model each, once per process
and shape), and :func:`to_gemm_route` re-expresses the weights of the
convolutions where QGEMM wins exactly, in memory, before the session is
built: ``q - 1`` with zero point ``-1`` dequantizes to the same
``q * scale`` (the symmetric range [-127, 127] leaves room for it). The
file on disk stays the portable symmetric model.
"""
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from mmengine.logging import print_log

from ..errors import UsageError, opt

#: 'auto' (measured per convolution), 'convsym' (as written) or 'gemm'
#: (every symmetric INT8 convolution on QGEMM)
ROUTES = ('auto', 'convsym', 'gemm')

#: QGEMM must beat ConvSym by this factor at a convolution's shape for
#: 'auto' to move that convolution (a little above 1: near-ties stay as
#: written)
GEMM_MIN_GAIN = 1.05


@dataclass
class SymmetricConv:
    """An INT8 convolution ONNX Runtime would run with ConvSym kernels."""
    weight: object        # the INT8 weight initializer (TensorProto)
    zero_point: object    # its zero point initializer (all 0)
    node: object          # the Conv (QDQ format) or QLinearConv node
    activation: str       # the name of the convolution's input tensor


@dataclass
class RoutePlan:
    """Which convolutions of a model go to QGEMM, and the probe timings
    (seconds of one run alone at its shape, summed over the model's
    convolutions) behind the choice."""
    convs: List[SymmetricConv] = field(default_factory=list)
    gemm: List[bool] = field(default_factory=list)
    seconds: Dict[str, float] = field(
        default_factory=lambda: dict(convsym=0.0, gemm=0.0, chosen=0.0))

    @property
    def summary(self) -> str:
        """'convsym', 'gemm' or e.g. 'gemm 30/34' (a mix)."""
        n = sum(self.gemm)
        if n == 0:
            return 'convsym'
        return 'gemm' if n == len(self.gemm) else f'gemm {n}/{len(self.gemm)}'


def symmetric_convs(model) -> List[SymmetricConv]:
    """The INT8 convolutions of ``model`` that ONNX Runtime would run with
    ConvSym kernels: 4-D INT8 weight initializers whose zero points are all
    0 and values within [-127, 127], consumed by a QLinearConv or
    dequantized (QDQ format) into a Conv's weight input."""
    from onnx import TensorProto, numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    conv_of_weight = {n.input[1]: n for n in model.graph.node
                      if n.op_type == 'Conv' and len(n.input) > 1}
    candidates = []
    for n in model.graph.node:
        if n.op_type == 'QLinearConv' and len(n.input) > 5:
            candidates.append((n.input[3], n.input[5], n, n.input[0]))
        elif (n.op_type == 'DequantizeLinear' and len(n.input) > 2
              and n.output[0] in conv_of_weight):
            conv = conv_of_weight[n.output[0]]
            candidates.append((n.input[0], n.input[2], conv, conv.input[0]))
    found = []
    for w_name, zp_name, node, activation in candidates:
        w, zp = inits.get(w_name), inits.get(zp_name)
        if (w is None or zp is None or len(w.dims) != 4
                or w.data_type != TensorProto.INT8
                or zp.data_type != TensorProto.INT8):
            continue
        if (numpy_helper.to_array(zp) == 0).all() and \
                numpy_helper.to_array(w).min() >= -127:
            found.append(SymmetricConv(w, zp, node, activation))
    return found


def to_gemm_route(model, convs: Optional[List[SymmetricConv]] = None
                  ) -> int:
    """Re-express the weights of ``convs`` (default: every symmetric INT8
    convolution of ``model``; in place) as ``q - 1`` with zero point
    ``-1``: the same dequantized weights, run by ONNX Runtime's QGEMM
    kernels. Returns how many convolutions changed."""
    from onnx import numpy_helper
    convs = symmetric_convs(model) if convs is None else convs
    for c in convs:
        q = numpy_helper.to_array(c.weight).astype(np.int16) - 1
        c.weight.CopyFrom(numpy_helper.from_array(q.astype(np.int8),
                                                  c.weight.name))
        z = numpy_helper.to_array(c.zero_point)
        c.zero_point.CopyFrom(numpy_helper.from_array(
            np.full(z.shape, -1, np.int8), c.zero_point.name))
    return len(convs)


def _probe_model(zero_point: int, x_shape: Tuple[int, ...],
                 w_shape: Tuple[int, ...], attrs: Tuple = ()) -> bytes:
    """One QLinearConv (input ``x_shape`` NCHW, weights ``w_shape`` per
    output channel with ``zero_point``, the conv's ``attrs``: serialized
    AttributeProtos) as a serialized ONNX model."""
    from onnx import AttributeProto, TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, w_shape) + zero_point
    m = w_shape[0]
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), 'xs'),
        numpy_helper.from_array(np.array(128, np.uint8), 'xz'),
        numpy_helper.from_array(w.astype(np.int8), 'w'),
        numpy_helper.from_array(np.full(m, 0.01, np.float32), 'ws'),
        numpy_helper.from_array(np.full(m, zero_point, np.int8), 'wz'),
        numpy_helper.from_array(np.array(0.5, np.float32), 'ys'),
        numpy_helper.from_array(np.array(128, np.uint8), 'yz'),
    ]
    # channels last, as ONNX Runtime's layout transformer runs the
    # QLinearConvs of a whole model (no transposes in the timing)
    node = helper.make_node(
        'QLinearConv', ['x', 'xs', 'xz', 'w', 'ws', 'wz', 'ys', 'yz'], ['y'],
        domain='com.microsoft', channels_last=1)
    for raw in attrs:
        a = AttributeProto()
        a.ParseFromString(raw)
        node.attribute.append(a)
    n, c, h, w = x_shape
    graph = helper.make_graph(
        [node], 'probe',
        [helper.make_tensor_value_info('x', TensorProto.UINT8, (n, h, w, c))],
        [helper.make_tensor_value_info('y', TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', 13), helper.make_opsetid('com.microsoft', 1)])
    return model.SerializeToString()


@lru_cache(maxsize=None)
def probe_conv(x_shape: Tuple[int, ...], w_shape: Tuple[int, ...],
               attrs: Tuple = (), threads: int = 1,
               repeat: int = 2) -> Tuple[float, float]:
    """Seconds of one convolution (input ``x_shape``, weights ``w_shape``,
    the conv's serialized ``attrs``) on ONNX Runtime's ConvSym and QGEMM
    kernels: ``(convsym, gemm)``, each the fastest of ``repeat`` runs after
    a warm-up, with ``threads`` threads (measured once per process)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    n, c, h, w = x_shape
    x = np.random.default_rng(1).integers(0, 256, (n, h, w, c),
                                          dtype=np.uint8)
    seconds = []
    for zero_point in (0, -1):
        session = ort.InferenceSession(
            _probe_model(zero_point, x_shape, w_shape, attrs), opts,
            providers=['CPUExecutionProvider'])
        session.run(None, {'x': x})
        best = float('inf')
        for _ in range(repeat):
            t0 = time.perf_counter()
            session.run(None, {'x': x})
            best = min(best, time.perf_counter() - t0)
        seconds.append(best)
    return seconds[0], seconds[1]


def _shapes(model) -> Dict[str, Tuple[int, ...]]:
    """Shapes of ``model``'s tensors (inputs and inferred, with the values
    of shape computations propagated: PSPNet's resize sizes) for one
    image: a symbolic batch dimension counts as 1, other dimensions must
    be static."""
    from onnx import shape_inference
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    out = {}
    for v in (list(inferred.graph.input) + list(inferred.graph.value_info)):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField('dim_value') for d in dims[1:]):
            out[v.name] = (dims[0].dim_value or 1, ) + tuple(
                d.dim_value for d in dims[1:])
    return out


def plan_routes(model, route: str = 'auto', threads: int = 1
                ) -> RoutePlan:
    """Which symmetric INT8 convolutions of ``model`` go to QGEMM on
    ``route``: all ('gemm'), none ('convsym') or, for 'auto', each where
    :func:`probe_conv` finds QGEMM at least :data:`GEMM_MIN_GAIN` times
    faster at the convolution's shape (a convolution whose input shape is
    not static stays on ConvSym)."""
    check_route(route)
    convs = symmetric_convs(model)
    plan = RoutePlan(convs=convs, gemm=[route == 'gemm'] * len(convs))
    if route != 'auto' or not convs:
        return plan
    shapes = _shapes(model)
    for i, c in enumerate(convs):
        x_shape = shapes.get(c.activation)
        if x_shape is None:
            continue
        convsym, gemm = probe_conv(
            x_shape, tuple(c.weight.dims),
            tuple(a.SerializeToString() for a in c.node.attribute),
            threads)
        plan.gemm[i] = convsym >= GEMM_MIN_GAIN * gemm
        plan.seconds['convsym'] += convsym
        plan.seconds['gemm'] += gemm
        plan.seconds['chosen'] += gemm if plan.gemm[i] else convsym
    return plan


def session_source(path: str, route: str = 'auto', threads: int = 1
                   ) -> Tuple[Union[str, bytes], RoutePlan]:
    """What to build an ONNX Runtime session from for the model at
    ``path`` on ``route``, and the plan behind it: ``path`` itself when no
    convolution moves (the 'convsym' route, a model without symmetric INT8
    convolutions, or 'auto' where ConvSym is faster everywhere), else the
    serialized model with the planned convolutions on QGEMM."""
    if check_route(route) == 'convsym':
        return path, RoutePlan()
    import onnx
    model = onnx.load(path)
    plan = plan_routes(model, route, threads)
    moved = [c for c, g in zip(plan.convs, plan.gemm) if g]
    if not moved:
        return path, plan
    to_gemm_route(model, moved)
    why = (f"probed alone at their shapes: {plan.seconds['chosen'] * 1e3:.0f}"
           f" ms against {plan.seconds['convsym'] * 1e3:.0f} ms on ConvSym"
           f" and {plan.seconds['gemm'] * 1e3:.0f} ms all on QGEMM"
           if route == 'auto' else f'int8_conv={route!r}')
    print_log(f"{path}: {len(moved)} of {len(plan.convs)} INT8 "
              f"convolutions on ONNX Runtime's QGEMM kernels (zero point "
              f"-1; {why})", logger='current')
    return model.SerializeToString(), plan


def check_route(route: str) -> str:
    """``route`` if it is one of :data:`ROUTES`, else a UsageError."""
    if route not in ROUTES:
        raise UsageError(f'{opt("int8_conv", route)} is not a route of '
                         f'INT8 convolutions: choose one of '
                         f'{", ".join(ROUTES)}')
    return route


__all__ = [
    'ROUTES', 'GEMM_MIN_GAIN', 'SymmetricConv', 'RoutePlan',
    'symmetric_convs', 'to_gemm_route', 'probe_conv', 'plan_routes',
    'session_source', 'check_route'
]
