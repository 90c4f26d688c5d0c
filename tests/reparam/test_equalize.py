"""Channel equalization is exact: rescaling conv -> ReLU -> conv pairs of a
fused model (any positive scales, the activation-aware and CLE scales)
changes its output by float rounding only, on every arch, dilation mode
and group count; clearing taps is exact on channels that never fire."""
import copy

import pytest
import torch
import torch.nn as nn

from repseg import reparameterize_model
from repseg.quant.equalize import equalize_
from repseg.models import RepVGG
from repseg.models.arch import ARCH_SETTINGS
from repseg.reparam.equalize import (cle_scales, clear_input_channels_,
                                     input_channel_ranges, outlier_ratio,
                                     relu_pairs, rescale_pair_)

#: relative max |diff| an exact rescaling may leave (fp32 rounding)
TOL = 1e-5


@torch.no_grad()
def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _loop_scale_inputs(conv, scale):
    """Brute force: the weights reading input channel c times scale[c]."""
    w = conv.weight.detach().double().clone()
    per_group = conv.in_channels // conv.groups
    out_pg = conv.out_channels // conv.groups
    for c in range(conv.in_channels):
        g = c // per_group
        w[g * out_pg:(g + 1) * out_pg, c % per_group] *= scale[c]
    return w


@pytest.mark.parametrize('groups', [1, 2, 4])
def test_rescale_pair_is_exact_through_relu(groups):
    torch.manual_seed(0)
    conv1 = nn.Conv2d(8, 16, 3, padding=1)
    conv2 = nn.Conv2d(16, 8, 3, padding=2, dilation=2, groups=groups)
    net = nn.Sequential(conv1, nn.ReLU(), conv2).eval()
    x = torch.randn(2, 8, 12, 12)
    ref = net(x)
    scale = torch.rand(16, dtype=torch.float64) * 10 + 0.01
    expect = _loop_scale_inputs(conv2, scale)
    rescale_pair_(conv1, conv2, scale)
    assert torch.allclose(conv2.weight.double(), expect.float().double())
    assert _rel(net(x), ref) <= TOL
    with pytest.raises(ValueError, match='must be positive'):
        rescale_pair_(conv1, conv2, torch.zeros(16))


def test_cle_balances_ranges_and_clearing_dead_channels_is_exact():
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 5, 3,
                                                            padding=1)
    with torch.no_grad():
        conv1.weight[2] *= 50
        conv1.weight[4] = 0
        conv1.bias[4] = -1.0            # channel 4 never fires
        conv2.weight[:, 4] = 300.0      # huge taps on it
    net = nn.Sequential(conv1, nn.ReLU(), conv2).eval()
    x = torch.randn(2, 4, 8, 8)
    ref = net(x)
    s = cle_scales(conv1, conv2)
    s[4] = 1.0
    rescale_pair_(conv1, conv2, s)
    r1 = conv1.weight.detach().double().abs().flatten(1).amax(1)
    r2 = input_channel_ranges(conv2)
    keep = [0, 1, 2, 3, 5]
    assert torch.allclose(r1[keep], r2[keep], rtol=1e-5)
    assert outlier_ratio(conv2).max() > 100
    clear_input_channels_(conv2, [4])
    assert outlier_ratio(conv2).max() < 100
    assert _rel(net(x), ref) <= TOL


def test_pairs_follow_the_data_flow():
    """Pairs only where conv1's output goes through a ReLU to conv2 and
    nowhere else: a stage output read by a head is not a pair."""
    fused = reparameterize_model(RepVGG('A0', out_indices=(3, 4)).eval())
    pairs = relu_pairs(fused, 'backbone.')
    names = [(a, b) for a, _, b, _ in pairs]
    n_convs = sum(isinstance(m, nn.Conv2d) for m in fused.modules())
    # every conv but the last feeds the next one; the stage-3 output is
    # also an output (out_indices 3), so that pair is not exact to rescale
    assert len(pairs) == n_convs - 2
    assert ('backbone.stage_3.13.branch_reparam',
            'backbone.stage_4.0.branch_reparam') not in names
    assert ('backbone.stage_2.3.branch_reparam',
            'backbone.stage_3.0.branch_reparam') in names   # across stages

    class Branchy(nn.Module):      # conv1's output read twice: no pair
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)
            self.act = nn.ReLU()

        def forward(self, x):
            y = self.act(self.a(x))
            return self.b(y) + y

    assert relu_pairs(Branchy()) == []


class _Backbone(nn.Module):
    """A bare backbone in a segmentor's layout (``encode_decode``), as
    :func:`equalize_` takes it."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def encode_decode(self, x, metas):
        return self.backbone(x)[-1]


@pytest.mark.slow
@pytest.mark.parametrize('arch', sorted(ARCH_SETTINGS))
@pytest.mark.parametrize('mode', ['full', 'fast'])
def test_equalization_is_exact_on_every_arch(arch, mode):
    """Activation-aware and CLE equalization of the whole fused backbone
    (grouped convs in the g2/g4 archs, dilations of both modes): every
    output stage unchanged to fp32 rounding on the calibration inputs
    (where the cleared channels are dead by construction)."""
    torch.manual_seed(0)
    # the fused form built directly (deploy=True: the same convs as the
    # folded model), random weights and biases
    fused = RepVGG(arch, out_indices=(3, 4), dilation_mode=mode,
                   deploy=True).eval()
    with torch.no_grad():
        for m in fused.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.1)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = fused(x)
    calib = [x[i:i + 1].numpy() for i in range(2)]
    for method in ('activation', 'cle'):
        eq = _Backbone(copy.deepcopy(fused))
        report = equalize_(eq, calib, method, outlier_factor=None)
        assert report['pairs'] > 10 and report['rescaled'] > 0
        with torch.no_grad():
            for a, b in zip(eq.backbone(x), ref):
                assert _rel(a, b) <= TOL, (arch, mode, method)
