"""repseg.layer_profile: layer kinds, and time attributed to the right kind
and part (checked with layers that sleep a known time)."""
import time

import pytest
import torch
import torch.nn as nn

from repseg.benchmark.profile import FUNCTIONAL, layer_kind, profile_layers
from repseg.ops import NNPACKConv2d, nnpack_available


class Sleep(nn.Module):
    """A leaf that takes ``seconds``."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


class Block(nn.Module):
    """Leaf time 40 ms, time outside leaves (a 'functional op') 30 ms."""

    def __init__(self):
        super().__init__()
        self.leaf = Sleep(0.04)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.relu(self.leaf(x))
        time.sleep(0.03)
        return x + y


class Segmentor(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = Block()
        self.decode_head = Sleep(0.02)

    def forward(self, x):
        return self.decode_head(self.backbone(x))


def test_layer_kinds():
    assert layer_kind(nn.Conv2d(8, 8, 3, padding=1)) == 'conv3x3'
    assert layer_kind(nn.Conv2d(8, 8, 3, padding=2, dilation=2)) == \
        'conv3x3 dilated'
    assert layer_kind(nn.Conv2d(8, 8, 3, 2, 1, groups=2)) == \
        'conv3x3 s2 grouped'
    assert layer_kind(nn.Conv2d(8, 8, 3, 1, 1, groups=8)) == \
        'conv3x3 depthwise'
    assert layer_kind(nn.Conv2d(8, 4, 1)) == 'conv1x1'
    conv = NNPACKConv2d.convert_(nn.Conv2d(8, 8, 3, padding=2, dilation=2))
    assert layer_kind(conv) == 'conv3x3 dilated [nnpack]'
    assert layer_kind(nn.BatchNorm2d(8)) == 'batchnorm'
    assert layer_kind(nn.SyncBatchNorm(8)) == 'batchnorm'
    assert layer_kind(nn.ReLU()) == layer_kind(nn.GELU()) == 'activation'
    assert layer_kind(nn.AdaptiveAvgPool2d(1)) == 'pooling'
    assert layer_kind(Sleep(0)) == 'Sleep'


def test_time_goes_to_the_right_kind_and_part():
    model = Segmentor()
    prof = profile_layers(model, torch.zeros(1), runs=2)
    kinds, parts = prof['kinds'], prof['parts']
    # each figure is a mean over 2 runs, in ms; sleeps are lower bounds
    assert kinds['Sleep'] >= 60 - 1          # 40 ms + 20 ms leaves
    assert kinds[FUNCTIONAL] >= 30 - 1       # the sleep outside leaves
    assert 'activation' in kinds            # timed, however short
    assert parts['backbone'] >= 70 - 1 and parts['decode_head'] >= 20 - 1
    assert parts['backbone'] < prof['total_ms']
    total = sum(kinds.values())
    assert total == pytest.approx(prof['total_ms'], rel=1e-9)
    assert sum(parts.values()) == pytest.approx(prof['total_ms'], rel=1e-9)
    assert prof['layers'] == {'Sleep': 2, 'activation': 1}
    # largest first
    assert list(kinds)[0] == 'Sleep'
    # the wrapped forwards are gone afterwards
    assert all('forward' not in vars(m) for m in model.modules())


def test_model_restored_when_the_forward_fails():

    class Boom(nn.Module):

        def forward(self, x):
            raise RuntimeError('boom')

    relu = nn.ReLU()
    own = relu.forward                # a forward set on the instance
    relu.forward = own
    model = nn.Sequential(relu, Boom())
    with pytest.raises(RuntimeError, match='boom'):
        profile_layers(model, torch.zeros(1))
    assert vars(relu)['forward'] is own
    assert all('forward' not in vars(m) for m in model.modules()
               if m is not relu)
    with pytest.raises(ValueError, match='runs must be >= 1'):
        profile_layers(model, torch.zeros(1), runs=0)


@pytest.mark.skipif(not nnpack_available(), reason='no NNPACK')
def test_profile_of_a_conv_stack_and_output_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.BatchNorm2d(16),
        nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    NNPACKConv2d.convert_(model[0])
    x = torch.randn(2, 16, 33, 35)
    with torch.no_grad():
        ref = model(x)
    prof = profile_layers(model, x)
    assert set(prof['kinds']) == {'conv3x3 dilated [nnpack]', 'batchnorm',
                                  'activation', 'conv1x1', FUNCTIONAL}
    assert all(v > 0 for k, v in prof['kinds'].items() if k != FUNCTIONAL)
    assert prof['parts'] == {}          # not a segmentor
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
