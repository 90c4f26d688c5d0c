"""One resize for an input of another size than a fixed-size file takes
(issue 35): inference (numpy, :func:`repseg.infer.predict.forward`) and
quantize's and tools/test.py's mIoU (torch,
:class:`repseg.deploy.forward.TorchForward` of a fixed-size file) both
run :func:`repseg.deploy.runtimes.resize.fixed_size_forward`, and give the
same logits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repseg.deploy.forward import TorchForward
from repseg.deploy.onnx import to_onnx
from repseg.deploy.runtimes import get_runtime
from repseg.infer.predict import EXACT, RESIZED, forward

FIXED = (32, 48)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """A small conv net exported at the fixed size 32x48, in ONNX
    Runtime (which refuses inputs of another size)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                              torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 5, 3, padding=1)).eval()
    path = str(tmp_path_factory.mktemp('resize') / 'net.onnx')
    to_onnx(net, torch.randn(1, 3, *FIXED), path)
    loaded = get_runtime('onnxruntime').load(path, threads=1)
    assert tuple(loaded.info.input_size) == FIXED
    yield loaded
    loaded.close()


@pytest.mark.parametrize('size', [(40, 36), (20, 70), (32, 48)])
def test_infer_and_quantize_resize_alike(model, size):
    x = np.random.default_rng(1).standard_normal(
        (1, 3) + size).astype(np.float32)
    ours, how = forward(x, model, FIXED)
    assert how == (EXACT if size == FIXED else RESIZED)
    theirs = TorchForward(model)(torch.from_numpy(x))
    assert isinstance(theirs, torch.Tensor)
    assert ours.shape == tuple(theirs.shape) == (1, 5) + size
    # the same function: the same float32 logits (tolerance 1e-6)
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=0, atol=1e-6)
    # and it is the bilinear resize torch computes (half-pixel centres,
    # no antialiasing) both ways, up to float32 rounding (1e-4)
    t = torch.from_numpy(x)
    ref = F.interpolate(torch.from_numpy(model(F.interpolate(
        t, size=FIXED, mode='bilinear', align_corners=False).numpy())),
        size=size, mode='bilinear', align_corners=False)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-4)


def test_a_batch_is_resized_image_by_image(model):
    x = np.random.default_rng(2).standard_normal(
        (2, 3, 40, 36)).astype(np.float32)
    both = TorchForward(model)(torch.from_numpy(x))
    for i in range(2):
        np.testing.assert_allclose(both[i:i + 1].numpy(),
                                   forward(x[i:i + 1], model, FIXED)[0],
                                   rtol=0, atol=1e-6)
