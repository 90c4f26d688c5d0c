"""The kernels of each INT8 convolution chosen at run time
(repseg.deploy.int8_conv): the QGEMM route re-expresses symmetric weights
exactly, sessions give the same outputs on every route, and the plan
follows what the probes measured at each convolution's shape."""
import numpy as np
import pytest

from repseg.deploy import int8_conv
from repseg.deploy.int8_conv import (RoutePlan, check_route, plan_routes,
                                     probe_conv, session_source,
                                     symmetric_convs, to_gemm_route)
from repseg.errors import UsageError
from repseg.ops.cpu import cpu_vector_isa, seen_isa

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _qdq_model(path, tmp_path):
    """Two convs (3x3 then 3x3 dilated) + ReLU, quantized by repseg's
    quantize_onnx (QDQ, symmetric per-channel weights)."""
    from repseg.deploy.quantize import quantize_onnx
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((8, 16, 3, 3)).astype(np.float32) * 0.2
    graph = helper.make_graph(
        [helper.make_node('Conv', ['image', 'w1'], ['a'], pads=[1] * 4),
         helper.make_node('Relu', ['a'], ['b']),
         helper.make_node('Conv', ['b', 'w2'], ['out'], pads=[2] * 4,
                          dilations=[2, 2])], 'g',
        [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                       [1, 8, 20, 20])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w1, 'w1'), numpy_helper.from_array(w2,
                                                                    'w2')])
    fp32 = str(tmp_path / 'fp32.onnx')
    onnx.save(helper.make_model(
        graph, opset_imports=[helper.make_opsetid('', 17)]), fp32)
    inputs = [rng.standard_normal((1, 8, 20, 20)).astype(np.float32)
              for _ in range(4)]
    quantize_onnx(fp32, path, inputs)
    return inputs


def _dequantized(convs):
    """name -> (q - zero point) of each conv weight (per output channel),
    as int32."""
    return {c.weight.name: numpy_helper.to_array(c.weight).astype(np.int32)
            - numpy_helper.to_array(c.zero_point).astype(
                np.int32).reshape(-1, 1, 1, 1)
            for c in convs}


def test_gemm_route_keeps_every_weight(tmp_path):
    path = str(tmp_path / 'int8.onnx')
    _qdq_model(path, tmp_path)
    model = onnx.load(path)
    convs = symmetric_convs(model)
    assert [c.node.op_type for c in convs] == ['Conv', 'Conv']
    before = _dequantized(convs)
    assert to_gemm_route(model) == 2
    after = _dequantized(convs)
    for name, q in before.items():
        np.testing.assert_array_equal(after[name], q)
    assert all((numpy_helper.to_array(c.zero_point) == -1).all()
               for c in convs)
    # nothing symmetric is left: a second pass changes nothing
    assert symmetric_convs(model) == [] and to_gemm_route(model) == 0
    onnx.checker.check_model(model)
    # only the convolutions asked for
    model = onnx.load(path)
    first, second = symmetric_convs(model)
    assert to_gemm_route(model, [second]) == 1
    assert [c.weight.name for c in symmetric_convs(model)] == [
        first.weight.name]


def test_only_symmetric_int8_conv_weights_are_taken():
    # QOperator format (QLinearConv) with zero points 0 is taken; with -1
    # (already the QGEMM route) or a -128 weight (outside [-127, 127]) not
    def probe(zero_point):
        return onnx.load_from_string(int8_conv._probe_model(
            zero_point, (1, 4, 8, 8), (4, 4, 3, 3)))
    assert len(symmetric_convs(probe(0))) == 1
    assert symmetric_convs(probe(-1)) == []
    model = probe(0)
    (c, ) = symmetric_convs(model)
    q = numpy_helper.to_array(c.weight).copy()
    q.flat[0] = -128
    c.weight.CopyFrom(numpy_helper.from_array(q, c.weight.name))
    assert symmetric_convs(model) == []


def test_plan_follows_the_probes_at_each_shape(tmp_path, monkeypatch):
    path = str(tmp_path / 'int8.onnx')
    _qdq_model(path, tmp_path)
    model = onnx.load(path)
    seen = []

    def fake_probe(x_shape, w_shape, attrs=(), threads=1):
        seen.append((x_shape, w_shape, threads))
        # QGEMM faster for the first conv, slower for the dilated one
        return (2.0, 1.0) if w_shape == (16, 8, 3, 3) else (1.0, 1.2)

    monkeypatch.setattr(int8_conv, 'probe_conv', fake_probe)
    plan = plan_routes(model, 'auto', threads=2)
    # each conv probed at its own input shape (batch 1), weights, threads
    assert seen == [((1, 8, 20, 20), (16, 8, 3, 3), 2),
                    ((1, 16, 20, 20), (8, 16, 3, 3), 2)]
    assert plan.gemm == [True, False] and plan.summary == 'gemm 1/2'
    assert plan.seconds == dict(convsym=3.0, gemm=2.2, chosen=2.0)
    # near-ties stay as written; explicit routes are not measured
    monkeypatch.setattr(int8_conv, 'probe_conv',
                        lambda *a, **k: (1.02, 1.0))
    assert plan_routes(model, 'auto').summary == 'convsym'
    monkeypatch.setattr(int8_conv, 'probe_conv', None)
    assert plan_routes(model, 'gemm').summary == 'gemm'
    assert plan_routes(model, 'convsym').summary == 'convsym'
    with pytest.raises(UsageError, match='auto, convsym, gemm'):
        check_route('amx')


def test_session_source_of_each_route(tmp_path, monkeypatch):
    path = str(tmp_path / 'int8.onnx')
    _qdq_model(path, tmp_path)
    fp32 = str(tmp_path / 'fp32.onnx')
    assert session_source(path, 'convsym')[0] == path
    assert session_source(fp32, 'gemm')[0] == fp32
    source, plan = session_source(path, 'gemm')
    assert plan.summary == 'gemm'
    assert symmetric_convs(onnx.load_from_string(source)) == []
    for timings, moved in (((2.0, 1.0), 2), ((1.0, 2.0), 0)):
        monkeypatch.setattr(int8_conv, 'probe_conv',
                            lambda *a, t=timings, **k: t)
        source, plan = session_source(path, 'auto')
        assert sum(plan.gemm) == moved
        assert (source == path) == (moved == 0)


def test_sessions_of_every_route_give_the_same_outputs(tmp_path):
    from repseg.deploy.onnx import ort_session
    path = str(tmp_path / 'int8.onnx')
    inputs = _qdq_model(path, tmp_path)
    out = {route: ort_session(path, int8_conv=route).run(
        None, {'image': inputs[0]})[0] for route in ('convsym', 'gemm',
                                                      'auto')}
    session, plan = ort_session(path, with_plan=True)
    assert isinstance(plan, RoutePlan) and len(plan.gemm) == 2
    for route in ('gemm', 'auto'):
        if 'VNNI' in seen_isa(cpu_vector_isa()):
            # integer-exact on both routes where no int16 sum saturates
            np.testing.assert_array_equal(out[route], out['convsym'])
        else:
            np.testing.assert_allclose(
                out[route], out['convsym'],
                atol=0.1 * np.abs(out['convsym']).max())
    # an fp32 model has no INT8 weights: loaded as it is on every route
    fp32 = str(tmp_path / 'fp32.onnx')
    ref = ort_session(fp32, int8_conv='convsym').run(
        None, {'image': inputs[0]})[0]
    np.testing.assert_array_equal(ort_session(fp32, int8_conv='gemm').run(
        None, {'image': inputs[0]})[0], ref)
    with pytest.raises(UsageError, match="int8_conv='fast' is not a route"):
        ort_session(path, int8_conv='fast')


def test_the_probe_times_both_routes():
    convsym, gemm = probe_conv((1, 8, 16, 16), (8, 8, 3, 3), threads=1,
                               repeat=1)
    assert 0 < convsym < 10 and 0 < gemm < 10


def test_shapes_follow_computed_resize_sizes():
    """PSPNet's pyramid upsamples to a size computed from the input's
    Shape; the bottleneck conv after it must still get a shape to be
    probed at (the biggest conv of PSPNet-B1g2)."""
    nodes = [
        helper.make_node('Shape', ['image'], ['s']),
        helper.make_node('Slice', ['s', 'two', 'four'], ['hw']),
        helper.make_node('Concat', ['nc', 'hw'], ['sizes'], axis=0),
        helper.make_node('Resize', ['pooled', '', '', 'sizes'], ['up'],
                         mode='linear'),
        helper.make_node('Concat', ['image', 'up'], ['cat'], axis=1),
        helper.make_node('Relu', ['cat'], ['out']),
    ]
    inits = [numpy_helper.from_array(np.array([2], np.int64), 'two'),
             numpy_helper.from_array(np.array([4], np.int64), 'four'),
             numpy_helper.from_array(np.array([1, 8], np.int64), 'nc'),
             numpy_helper.from_array(np.zeros((1, 8, 2, 2), np.float32),
                                     'pooled')]
    graph = helper.make_graph(
        nodes, 'g', [helper.make_tensor_value_info(
            'image', TensorProto.FLOAT, ['batch', 8, 12, 10])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, None)],
        inits)
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid('', 17)])
    assert int8_conv._shapes(model)['cat'] == (1, 16, 12, 10)
