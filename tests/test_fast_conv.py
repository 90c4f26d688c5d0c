# Copyright (c) repseg contributors. All rights reserved.
"""NNPACK Winograd 3x3 convs: equal to F.conv2d, used only where valid."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from repseg import reparameterize_model
from repseg.models import RepVGG
from repseg.ops import (NNPACKConv2d, count_fast_convs, is_nnpack_eligible,
                        nnpack_available, nnpack_conv3x3, resolve_conv_impl,
                        use_fast_convs)
from repseg.testing import max_rel_diff, randomize_bn_

pytestmark = pytest.mark.skipif(not nnpack_available(),
                                reason='this PyTorch build has no NNPACK')

# Winograd F(6x6,3x3) in fp32 vs direct convolution: relative to max |out|.
RTOL = 1e-4


@pytest.mark.parametrize('n,d,g,size', [
    (1, 1, 1, (17, 19)),
    (1, 2, 1, (23, 20)),
    (1, 4, 1, (13, 30)),
    (2, 1, 1, (11, 9)),
    (3, 3, 2, (16, 17)),
    (1, 1, 4, (12, 12)),
    (2, 2, 2, (9, 14)),
    (1, 5, 1, (4, 6)),     # dilation larger than the image
])
@pytest.mark.parametrize('with_bias', [True, False])
def test_nnpack_conv3x3_matches_conv2d(n, d, g, size, with_bias):
    gen = torch.Generator().manual_seed(n * 100 + d * 10 + g)
    cin, cout = 8 * g, 4 * g
    x = torch.randn(n, cin, *size, generator=gen)
    w = torch.randn(cout, cin // g, 3, 3, generator=gen)
    b = torch.randn(cout, generator=gen) if with_bias else None
    ref = F.conv2d(x, w, b, padding=d, dilation=d, groups=g)
    out = nnpack_conv3x3(x, w, b, dilation=d, groups=g)
    assert out.shape == ref.shape
    assert out.is_contiguous()
    assert max_rel_diff(out, ref) < RTOL


def test_eligibility():
    assert is_nnpack_eligible(nn.Conv2d(4, 4, 3, padding=1))
    assert is_nnpack_eligible(nn.Conv2d(4, 8, 3, padding=2, dilation=2,
                                        groups=2))
    assert not is_nnpack_eligible(nn.Conv2d(4, 4, 3, stride=2, padding=1))
    assert not is_nnpack_eligible(nn.Conv2d(4, 4, 1))
    assert not is_nnpack_eligible(nn.Conv2d(4, 4, 3, padding=0))
    assert not is_nnpack_eligible(
        nn.Conv2d(4, 4, 3, padding=(1, 2), dilation=(1, 2)))
    assert not is_nnpack_eligible(
        nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'))
    with pytest.raises(ValueError, match='3x3 stride-1'):
        NNPACKConv2d.convert_(nn.Conv2d(4, 4, 1))


def _counting(monkeypatch):
    calls = []
    real = torch._nnpack_spatial_convolution

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(torch, '_nnpack_spatial_convolution', spy)
    return calls


def test_module_uses_nnpack_only_for_inference(monkeypatch):
    calls = _counting(monkeypatch)
    conv = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3)
    ref_conv = copy.deepcopy(conv)
    NNPACKConv2d.convert_(conv)
    x = torch.randn(2, 6, 10, 10)
    with torch.no_grad():
        out = conv(x)
    # batch 2 x 2x2 dilation phases in one mosaic image, one call per group
    assert len(calls) == 3 and calls[0][0] == 1
    assert max_rel_diff(out, ref_conv(x)) < RTOL

    calls.clear()
    xg = x.clone().requires_grad_()
    conv(xg).sum().backward()           # training: native, differentiable
    assert calls == [] and xg.grad is not None
    with torch.no_grad():   # formats NNPACK does not take: native
        conv(x.contiguous(memory_format=torch.channels_last))
        conv.double()(x.double())
    assert calls == []


def test_use_fast_convs_on_fused_repvgg(monkeypatch):
    model = RepVGG('A0', dilation_mode='full')
    randomize_bn_(model, seed=0)
    model.eval()
    fused = reparameterize_model(model)
    fast = use_fast_convs(fused, 'nnpack')
    # copies by default; the original keeps plain convs
    assert count_fast_convs(fused)[0] == 0
    n_fast, n_all = count_fast_convs(fast)
    strided = [m for m in fused.modules()
               if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert n_all == n_fast + len(strided) and len(strided) == 3
    assert fast.state_dict().keys() == fused.state_dict().keys()
    fused.load_state_dict(fast.state_dict(), strict=True)
    x = torch.randn(1, 3, 65, 71)
    calls = _counting(monkeypatch)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert len(calls) == n_fast
    for r, o in zip(ref, out):
        assert max_rel_diff(o, r) < RTOL


def test_native_is_a_plain_copy():
    conv = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))
    same = use_fast_convs(conv, 'native')
    assert same is not conv and count_fast_convs(same) == (0, 1)
    inplace = use_fast_convs(conv, 'nnpack', inplace=True)
    assert inplace is conv and count_fast_convs(conv) == (1, 1)


def test_resolve_conv_impl():
    assert resolve_conv_impl('auto') == 'nnpack'
    assert resolve_conv_impl('auto', 'cpu', torch.bfloat16) == 'native'
    assert resolve_conv_impl('auto', 'cuda') == 'native'
    assert resolve_conv_impl('native', 'cuda') == 'native'
    with pytest.raises(ValueError, match="one of \\['auto', 'nnpack', "):
        resolve_conv_impl('winograd')
    with pytest.raises(ValueError, match="use 'auto' or 'native'"):
        resolve_conv_impl('nnpack', 'cuda')
