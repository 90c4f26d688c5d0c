"""The fusion algebra (repseg.fusion), piece by piece."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from repseg.reparam.fusion import (
    bn_scale_shift, fold_conv_bn_, fuse_branches, fuse_kernel_bn,
    identity_kernel, pad_kernel)
from repseg.testing import max_rel_diff, randomize_bn_

from tests.utils import REL_TOL


@pytest.mark.parametrize('channels,groups', [(8, 1), (8, 2), (8, 4), (6, 6)])
def test_identity_kernel_is_identity(channels, groups):
    x = torch.randn(2, channels, 9, 7)
    k = identity_kernel(channels, groups, dtype=torch.float32)
    assert k.shape == (channels, channels // groups, 3, 3)
    y = F.conv2d(x, k, padding=1, groups=groups)
    assert torch.equal(y, x)


def test_identity_kernel_rejects_bad_groups():
    with pytest.raises(ValueError, match='not divisible'):
        identity_kernel(6, 4)


@pytest.mark.parametrize('dilation', [1, 2, 3])
@pytest.mark.parametrize('stride', [1, 2])
def test_padded_1x1_equals_1x1_under_dilation(dilation, stride):
    x = torch.randn(1, 4, 13, 10)
    w = torch.randn(5, 4, 1, 1)
    ref = F.conv2d(x, w, stride=stride)
    out = F.conv2d(
        x, pad_kernel(w, 3), stride=stride, padding=dilation,
        dilation=dilation)
    assert out.shape == ref.shape
    assert max_rel_diff(ref, out) < 1e-6


def test_pad_kernel_rejects_uncentrable():
    with pytest.raises(ValueError, match='cannot centre'):
        pad_kernel(torch.zeros(1, 1, 2, 2), 3)


@pytest.mark.parametrize('bias', [False, True])
def test_fold_conv_bn_matches_eval_bn(bias):
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias, groups=2)
    bn = randomize_bn_(nn.BatchNorm2d(6)).eval()
    x = torch.randn(2, 4, 11, 11)
    ref = bn(conv(x))
    fused = fold_conv_bn_(conv, bn)
    assert fused.bias is not None
    assert max_rel_diff(ref, fused(x)) < REL_TOL


def test_bn_scale_shift_formula():
    bn = randomize_bn_(nn.BatchNorm2d(3, eps=1e-3))
    scale, shift = bn_scale_shift(bn)
    std = (bn.running_var.double() + 1e-3).sqrt()
    torch.testing.assert_close(scale, bn.weight.double() / std)
    torch.testing.assert_close(
        shift, bn.bias.double() - bn.running_mean.double() * scale)


def test_bn_without_running_stats_is_refused():
    bn = nn.BatchNorm2d(3, track_running_stats=False)
    with pytest.raises(ValueError, match='track_running_stats=False'):
        fuse_kernel_bn(torch.randn(3, 3, 3, 3), bn)


def test_bn_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match='4 channels.*3 output channels'):
        fuse_kernel_bn(torch.randn(3, 3, 3, 3), nn.BatchNorm2d(4))


def test_fuse_branches_rejects_misaligned_1x1():
    conv3 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    conv1 = nn.Conv2d(4, 4, 1, padding=1, bias=False)  # wrong padding
    bn = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match='padding'):
        fuse_branches(conv3, bn, conv1, bn)
