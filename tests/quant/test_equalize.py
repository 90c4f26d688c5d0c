"""RepVGG's INT8 failure mode, planted, and its repair: dead channels with
huge identity taps (fp32 unchanged) cost INT8 accuracy on both runtimes
without equalization and nothing with it; the per-layer sensitivity list
points at the planted layers."""
import copy

import numpy as np
import pytest
import torch

from repseg import reparameterize_model
from repseg.deploy import build_segmentor
from repseg.deploy.build import SegForward
from repseg.quant.equalize import equalize_
from repseg.deploy.onnx import to_onnx
from repseg.deploy.runtimes import get_runtime
from repseg.quant.sensitivity import layer_sensitivity
from repseg.reparam.equalize import relu_pairs
from repseg.testing import plant_dead_channels_, randomize_bn_
from tests.utils import DEMO_CONFIG, load_cfg

SIZE = (64, 128)


@pytest.fixture(scope='module')
def models():
    """(clean, planted) fused demo A0 PSPNets computing the same function:
    the same dead channels in stages 2-3, the planted one with a centre tap
    of 200 on each (what an identity BN with a huge scale leaves)."""
    torch.manual_seed(0)
    cfg = load_cfg(DEMO_CONFIG)
    fused = reparameterize_model(
        randomize_bn_(build_segmentor(cfg), seed=1)).eval()
    clean, planted = copy.deepcopy(fused), copy.deepcopy(fused)
    assert plant_dead_channels_(clean, tap=None) == \
        plant_dead_channels_(planted) == 64
    return clean, planted


def _inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, *SIZE, generator=g).numpy() for _ in range(n)]


CALIB, TEST = _inputs(8, 0), _inputs(8, 1)


def _int8_error(model, runtime, tmp_path, name):
    """Mean relative L1 error (%) of the INT8 logits against the model's
    own fp32 logits on TEST, and the argmax agreement (%)."""
    rt = get_runtime(runtime)
    onnx_path = str(tmp_path / f'{name}.onnx')
    to_onnx(SegForward(model), torch.from_numpy(CALIB[0]), onnx_path)
    fp32 = rt.from_onnx(onnx_path, str(tmp_path / f'{name}_fp32{rt.suffix}'))
    int8 = str(tmp_path / f'{name}_int8{rt.suffix}')
    rt.quantize(fp32, int8, CALIB)
    q = rt.load(int8, 'int8')
    assert q.info.float_layers in ([], [f for f in q.info.float_layers
                                        if 'MatMul' in f])
    errs, agree = [], []
    with torch.no_grad():
        for x in TEST:
            ref = SegForward(model)(torch.from_numpy(x))
            out = torch.from_numpy(q(x))
            errs.append(float((out - ref).abs().mean() / ref.abs().mean()))
            agree.append(float((out.argmax(1) == ref.argmax(1)).float()
                               .mean()))
    return 100 * np.mean(errs), 100 * np.mean(agree)


def test_planted_models_compute_the_same(models):
    clean, planted = models
    x = torch.from_numpy(TEST[0])
    with torch.no_grad():
        assert torch.equal(SegForward(clean)(x), SegForward(planted)(x))


@pytest.mark.slow
@pytest.mark.parametrize('runtime', ['onnxruntime', 'openvino'])
def test_equalization_repairs_the_planted_taps(models, runtime, tmp_path):
    """Without the repair the planted taps cost INT8 fidelity far beyond
    the clean model's; with it (activation-aware, the default) the planted
    model is no worse than the clean one (bound 0.3 points), with no layer
    left in float; the repair leaves fp32 unchanged on the calibration
    set (channels cleared for never firing there stay dead)."""
    clean, planted = models
    base_err, base_agree = _int8_error(clean, runtime, tmp_path, 'clean')
    bad_err, bad_agree = _int8_error(planted, runtime, tmp_path, 'planted')
    assert bad_err > base_err + 5, (bad_err, base_err)   # the mechanism
    repaired = copy.deepcopy(planted)
    report = equalize_(repaired, CALIB, 'activation')
    assert report['cleared'] >= 64
    assert report['outlier_ratio_before'] > 1000 > \
        report['outlier_ratio_after']
    with torch.no_grad():   # exact where the cleared channels are dead
        for x in CALIB[:2]:
            x = torch.from_numpy(x)
            ref = SegForward(planted)(x)
            assert float((SegForward(repaired)(x) - ref).abs().max()
                         / ref.abs().max()) <= 1e-5
    err, agree = _int8_error(repaired, runtime, tmp_path, 'repaired')
    assert err <= base_err + 0.3, (err, base_err)
    assert agree >= base_agree - 0.3, (agree, base_agree)


def test_sensitivity_points_at_the_planted_layers(models):
    """The layers whose INT8 alone costs most are the planted second convs
    (the other weights of their channels round to zero)."""
    _, planted = models
    top = layer_sensitivity(planted, CALIB[:1], top=5)
    assert len(top) == 5
    assert top[0]['relative_error'] >= top[-1]['relative_error']
    planted_convs = {f'backbone.{n2}'
                     for _, _, n2, c2 in relu_pairs(planted.backbone)
                     if float(c2.weight.detach().abs().max()) >= 200}
    assert top[0]['layer'] in planted_convs, (top, planted_convs)


@pytest.fixture(scope='module')
def near_dead():
    """The fused demo A0 PSPNet with near-dead channels in stages 2-3
    (their weights and bias scaled by 0.02: they fire, weakly) and a tap of
    200 from each of them into the next conv; and the list of
    (second conv, output channel, input channel) of the planted taps."""
    torch.manual_seed(0)
    cfg = load_cfg(DEMO_CONFIG)
    model = reparameterize_model(
        randomize_bn_(build_segmentor(cfg), seed=1)).eval()
    assert plant_dead_channels_(model, alive=0.02) == 64
    taps = []
    for _, _, _, conv2 in relu_pairs(model.backbone):
        kh, kw = conv2.kernel_size
        per_group = conv2.in_channels // conv2.groups
        for c in range(conv2.out_channels):
            if float(conv2.weight[c, c % per_group, kh // 2, kw // 2]) == 200:
                taps.append((conv2, c, c % per_group))
    # a tap whose channel a later pair made near-dead was scaled with it
    assert 56 <= len(taps) <= 64
    return model, taps


def test_activation_aware_repair_shrinks_near_dead_taps(near_dead, tmp_path):
    """Channels that are not dead but nearly so (they fire, weakly, on the
    calibration images) with huge taps: the activation-aware repair rescales
    most of them (and clears those that never fire there), every planted
    tap shrinks at least 10x, fp32 is unchanged on the calibration images
    (exact rescaling, 1e-5), and the INT8 error on ONNX Runtime falls."""
    planted, taps = near_dead
    repaired = copy.deepcopy(planted)
    report = equalize_(repaired, CALIB, 'activation')
    assert report['rescaled'] > 0, report
    assert report['outlier_ratio_after'] < report['outlier_ratio_before']
    convs = {id(m): m for _, _, _, m in relu_pairs(repaired.backbone)}
    originals = [m for _, _, _, m in relu_pairs(planted.backbone)]
    index = {id(m): i for i, m in enumerate(originals)}
    repaired_list = list(convs.values())
    shrunk = []
    for conv2, c, j in taps:
        kh, kw = conv2.kernel_size
        shrunk.append(float(repaired_list[index[id(conv2)]].weight[
            c, j, kh // 2, kw // 2]))
    assert all(abs(t) <= 20 for t in shrunk), shrunk     # each was 200
    # most planted channels fire on the calibration images: their taps are
    # rescaled, not cleared (a channel that never fires is cleared)
    assert sum(t != 0 for t in shrunk) >= len(shrunk) // 2, shrunk
    with torch.no_grad():   # exact where the cleared channels never fire
        for x in CALIB[:2]:
            x = torch.from_numpy(x)
            ref = SegForward(planted)(x)
            assert float((SegForward(repaired)(x) - ref).abs().max()
                         / ref.abs().max()) <= 1e-5
    before, _ = _int8_error(planted, 'onnxruntime', tmp_path, 'near_dead')
    after, _ = _int8_error(repaired, 'onnxruntime', tmp_path, 'repaired')
    assert after < before, (after, before)
