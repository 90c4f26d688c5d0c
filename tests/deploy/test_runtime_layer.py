"""The runtime layer speaks numpy: a loaded model maps an array to an
array, ``submit`` puts several requests in flight (throughput mode: the
runtime's streams and requests, read back), and the results are the ones
the synchronous call gives."""
import numpy as np
import pytest
import torch

from repseg.deploy.onnx import to_onnx
from repseg.deploy.runtimes import get_runtime, runtime_names


@pytest.fixture(scope='module')
def onnx_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                              torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 5, 3, padding=1)).eval()
    path = str(tmp_path_factory.mktemp('layer') / 'net.onnx')
    to_onnx(net, torch.randn(1, 3, 32, 48), path)
    return path, net


@pytest.mark.parametrize('name', runtime_names())
@pytest.mark.parametrize('mode', ['latency', 'throughput'])
def test_numpy_in_numpy_out_and_requests_in_flight(onnx_file, tmp_path,
                                                   name, mode):
    path, net = onnx_file
    rt = get_runtime(name)
    model_file = rt.from_onnx(path, str(tmp_path / f'net{rt.suffix}'))
    model = rt.load(model_file, threads=2, mode=mode)
    xs = [np.random.default_rng(i).standard_normal(
        (1, 3, 32, 48)).astype(np.float32) for i in range(5)]
    with torch.no_grad():
        refs = [net(torch.from_numpy(x)).numpy() for x in xs]
    outs = [model(x) for x in xs]
    assert all(isinstance(o, np.ndarray) and o.shape == (1, 5, 32, 48)
               for o in outs)
    futures = [model.submit(x) for x in xs]
    for ref, out, fut in zip(refs, outs, futures):
        np.testing.assert_allclose(out, ref, atol=1e-4)
        np.testing.assert_array_equal(fut.result(), out)
    i = model.info
    assert (i.runtime, i.mode, i.precision) == (name, mode, 'fp32')
    if mode == 'latency':
        assert (i.streams, i.requests) == (1, 1)
    else:
        assert i.streams >= 1 and i.requests >= 1
    # threads in all, whatever the streams: both runtimes say the same
    assert i.threads == 2
    model.close()


@pytest.mark.parametrize('name', runtime_names())
@pytest.mark.parametrize('mode', ['latency', 'throughput'])
def test_the_class_map_computed_in_the_graph(onnx_file, tmp_path, name,
                                             mode):
    """``labels=True``: the runtime's own argmax over the classes (beside
    the logits) is numpy's argmax of its logits, ties included (the first
    maximum: the last two classes are made equal everywhere)."""
    import copy
    _, net = onnx_file
    net = copy.deepcopy(net)
    with torch.no_grad():   # classes 3 and 4 equal, and often the largest
        last = net[2]
        last.weight[4] = last.weight[3]
        last.bias[3] = last.bias[4] = 2.0
    path = str(tmp_path / 'tie.onnx')
    to_onnx(net, torch.randn(1, 3, 32, 48), path)
    rt = get_runtime(name)
    assert rt.argmax_in_graph
    model_file = rt.from_onnx(path, str(tmp_path / f'net{rt.suffix}'))
    plain = rt.load(model_file, threads=2, mode=mode)
    assert not plain.has_labels
    model = rt.load(model_file, threads=2, mode=mode, labels=True)
    assert model.has_labels
    for i in range(3):
        x = np.random.default_rng(i).standard_normal(
            (1, 3, 32, 48)).astype(np.float32)
        logits = model(x)
        assert logits.shape == (1, 5, 32, 48)
        labels = model.argmax(x)
        assert labels.shape == (1, 32, 48)
        np.testing.assert_array_equal(labels, logits.argmax(1))
        np.testing.assert_array_equal(labels, plain.argmax(x))
        assert (labels == 3).mean() > 0.1 and not (labels == 4).any()
    model.close()
    plain.close()
