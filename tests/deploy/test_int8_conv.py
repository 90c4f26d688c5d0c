"""The kernels of INT8 convolutions chosen at run time
(repseg.deploy.int8_conv): the QGEMM route re-expresses symmetric weights
exactly, the session gives the same outputs on both routes, and the choice
follows what the probe measured."""
import numpy as np
import pytest

from repseg.deploy import int8_conv
from repseg.deploy.int8_conv import (check_route, measured_route,
                                     resolve_route, session_source,
                                     symmetric_conv_weights, to_gemm_route)
from repseg.errors import UsageError
from repseg.ops.cpu import cpu_vector_isa

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


def _dequantized(pairs, model):
    """name -> (q - zero point) of each conv weight (per output channel),
    as int32."""
    inits = {i.name: i for i in model.graph.initializer}
    return {w.name: numpy_helper.to_array(inits[w.name]).astype(np.int32)
            - numpy_helper.to_array(inits[zp.name]).astype(
                np.int32).reshape(-1, 1, 1, 1)
            for w, zp in pairs}


def test_gemm_route_keeps_every_weight(tmp_path):
    path = str(tmp_path / 'int8.onnx')
    _qdq_model(path, tmp_path)
    model = onnx.load(path)
    pairs = symmetric_conv_weights(model)
    assert len(pairs) == 2
    before = _dequantized(pairs, model)
    assert to_gemm_route(model) == 2
    after = _dequantized(pairs, model)
    for name, q in before.items():
        np.testing.assert_array_equal(after[name], q)
    zps = [numpy_helper.to_array(zp) for _, zp in pairs]
    assert all((z == -1).all() and z.shape == (w.dims[0], )
               for z, (w, _) in zip(zps, pairs))
    # nothing symmetric is left: a second pass changes nothing
    assert symmetric_conv_weights(model) == [] and to_gemm_route(model) == 0
    onnx.checker.check_model(model)


def test_only_symmetric_int8_conv_weights_are_taken():
    # QOperator format (QLinearConv) with zero points 0 is taken; with -1
    # (already the QGEMM route) or a -128 weight (outside [-127, 127]) not
    for zero_point, taken in ((0, 1), (-1, 0)):
        model = onnx.load_from_string(int8_conv._probe_model(zero_point,
                                                             channels=4))
        assert len(symmetric_conv_weights(model)) == taken
    model = onnx.load_from_string(int8_conv._probe_model(0, channels=4))
    (w, _), = symmetric_conv_weights(model)
    q = numpy_helper.to_array(w).copy()
    q.flat[0] = -128
    w.CopyFrom(numpy_helper.from_array(q, w.name))
    assert symmetric_conv_weights(model) == []


def test_session_source_of_each_route(tmp_path, monkeypatch):
    path = str(tmp_path / 'int8.onnx')
    _qdq_model(path, tmp_path)
    fp32 = str(tmp_path / 'fp32.onnx')
    assert session_source(path, 'convsym') == path
    assert session_source(fp32, 'gemm') == fp32
    gemm = onnx.load_from_string(session_source(path, 'gemm'))
    assert symmetric_conv_weights(gemm) == []
    zps = [numpy_helper.to_array(i) for i in gemm.graph.initializer
           if i.data_type == TensorProto.INT8 and len(i.dims) == 1]
    assert zps and all((z == -1).all() for z in zps)
    for route in ('gemm', 'convsym'):
        monkeypatch.setattr(int8_conv, 'measured_route',
                            lambda route=route: (route, 1.0))
        source = session_source(path, 'auto')
        assert (source == path) == (route == 'convsym')


def test_sessions_of_both_routes_give_the_same_outputs(tmp_path):
    from repseg.deploy.onnx import ort_session
    path = str(tmp_path / 'int8.onnx')
    inputs = _qdq_model(path, tmp_path)
    out = {route: ort_session(path, int8_conv=route).run(
        None, {'image': inputs[0]})[0] for route in ('convsym', 'gemm')}
    if 'VNNI' in cpu_vector_isa().split(' (')[0]:
        # integer-exact on both routes where no int16 sum saturates
        np.testing.assert_array_equal(out['gemm'], out['convsym'])
    else:
        np.testing.assert_allclose(out['gemm'], out['convsym'],
                                   atol=0.1 * np.abs(out['convsym']).max())
    # an fp32 model has no INT8 weights: loaded as it is on every route
    fp32 = str(tmp_path / 'fp32.onnx')
    ref = ort_session(fp32, int8_conv='convsym').run(
        None, {'image': inputs[0]})[0]
    np.testing.assert_array_equal(ort_session(fp32, int8_conv='gemm').run(
        None, {'image': inputs[0]})[0], ref)
    with pytest.raises(UsageError, match="int8_conv='fast' is not a route"):
        ort_session(path, int8_conv='fast')


def test_auto_takes_what_the_probe_measured_faster(monkeypatch):
    measured_route.cache_clear()
    try:
        for seconds, route in (({'convsym': 2.0, 'gemm': 1.0}, 'gemm'),
                               ({'convsym': 1.1, 'gemm': 1.0}, 'convsym'),
                               ({'convsym': 1.0, 'gemm': 1.3}, 'convsym')):
            measured_route.cache_clear()
            monkeypatch.setattr(int8_conv, 'probe_routes',
                                lambda seconds=seconds: seconds)
            assert resolve_route('auto') == route
            assert measured_route()[1] == pytest.approx(
                seconds['convsym'] / seconds['gemm'])
        # explicit routes are taken as given, without measuring
        monkeypatch.setattr(int8_conv, 'probe_routes', None)
        assert resolve_route('convsym') == 'convsym'
        assert resolve_route('gemm') == 'gemm'
        with pytest.raises(UsageError, match='auto, convsym, gemm'):
            check_route('amx')
    finally:
        measured_route.cache_clear()


def test_the_probe_times_both_routes():
    seconds = int8_conv.probe_routes(repeat=2)
    assert set(seconds) == {'convsym', 'gemm'}
    assert all(0 < s < 10 for s in seconds.values())
