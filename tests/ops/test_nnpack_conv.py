# Copyright (c) repseg contributors. All rights reserved.
"""NNPACK Winograd 3x3 convs: equal to F.conv2d, used only where valid."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from repseg import reparameterize_model
from repseg.models import RepVGG
from repseg.ops import (NNPACKConv2d, _nnpack, count_nnpack_convs,
                        is_nnpack_eligible, kernel_transform_bytes,
                        nnpack_available, nnpack_conv3x3, nnpack_pays_off,
                        resolve_conv_impl, transform_kernels, use_nnpack_convs)
from repseg.ops.nnpack_conv import (MIN_MOSAIC_GROUP_CHANNELS,
                                  MIN_MOSAIC_PIXELS, MIN_PIXELS)
from repseg.testing import max_rel_diff, randomize_bn_

pytestmark = pytest.mark.skipif(not nnpack_available(),
                                reason='this PyTorch build has no NNPACK')

# Winograd F(6x6,3x3) in fp32 vs direct convolution: relative to max |out|.
RTOL = 1e-4


@pytest.fixture(autouse=True)
def _nnpack_at_every_size(monkeypatch):
    """These tests run NNPACK on small inputs on purpose (fast, and the
    mosaic edge cases are small); the size policy is tested on its own."""
    monkeypatch.setattr(NNPACKConv2d, 'skip_small', False)


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
@pytest.mark.parametrize('path', ['precomputed', 'per-call', 'torch'])
def test_nnpack_conv3x3_matches_conv2d(n, d, g, size, with_bias, path,
                                       monkeypatch):
    gen = torch.Generator().manual_seed(n * 100 + d * 10 + g)
    cin, cout = 8 * g, 4 * g
    x = torch.randn(n, cin, *size, generator=gen)
    w = torch.randn(cout, cin // g, 3, 3, generator=gen)
    b = torch.randn(cout, generator=gen) if with_bias else None
    ref = F.conv2d(x, w, b, padding=d, dilation=d, groups=g)
    if path == 'torch':     # builds without the direct NNPACK binding
        monkeypatch.setattr(_nnpack, 'binding', lambda: None)
        assert transform_kernels(w, g) is None
    kernels = transform_kernels(w, g) if path == 'precomputed' else None
    out = nnpack_conv3x3(x, w, b, dilation=d, groups=g, kernels=kernels)
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


def _counting(monkeypatch, what='conv'):
    """Record the NNPACK calls (input shape (C, H, W) and whether the kernel
    was pre-transformed) or the kernel transforms (weight shapes)."""
    lib = _nnpack.binding()
    assert lib is not None, _nnpack.binding_error()
    calls = []
    real = getattr(lib, what)

    def spy(*args, **kwargs):
        calls.append((args[0].shape, kwargs.get('transformed'))
                     if what == 'conv' else args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(lib, what, spy)
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
    # (2 input channels each); 'nnpack' transforms the kernel in the call
    assert len(calls) == 3
    assert calls[0] == (torch.Size([2, 2 * 2 * 6, 2 * 6]), False)
    assert max_rel_diff(out, ref_conv(x)) < RTOL

    calls.clear()
    xg = x.clone().requires_grad_()
    conv(xg).sum().backward()           # training: native, differentiable
    assert calls == [] and xg.grad is not None
    with torch.no_grad():   # formats NNPACK does not take: native
        conv(x.contiguous(memory_format=torch.channels_last))
        conv.double()(x.double())
    assert calls == []


def test_use_nnpack_convs_on_fused_repvgg(monkeypatch):
    model = RepVGG('A0', dilation_mode='full')
    randomize_bn_(model, seed=0)
    model.eval()
    fused = reparameterize_model(model)
    fast = use_nnpack_convs(fused, 'nnpack')
    # copies by default; the original keeps plain convs
    assert count_nnpack_convs(fused)[0] == 0
    n_fast, n_all = count_nnpack_convs(fast)
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
    same = use_nnpack_convs(conv, 'native')
    assert same is not conv and count_nnpack_convs(same) == (0, 1)
    inplace = use_nnpack_convs(conv, 'nnpack', inplace=True)
    assert inplace is conv and count_nnpack_convs(conv) == (1, 1)


def test_resolve_conv_impl():
    assert resolve_conv_impl('auto') == 'nnpack'
    assert resolve_conv_impl('auto', 'cpu', torch.bfloat16) == 'native'
    assert resolve_conv_impl('auto', 'cuda') == 'native'
    assert resolve_conv_impl('native', 'cuda') == 'native'
    with pytest.raises(ValueError, match="one of \\['auto', 'nnpack', "):
        resolve_conv_impl('winograd')
    with pytest.raises(ValueError, match="use 'auto' or 'native'"):
        resolve_conv_impl('nnpack', 'cuda')
    with pytest.raises(ValueError, match="'nnpack-precomputed' runs fp32"):
        resolve_conv_impl('nnpack-precomputed', 'cpu', torch.bfloat16)


def test_kernel_transforms_kept_and_refreshed(monkeypatch):
    transforms = _counting(monkeypatch, 'transform_kernel')
    conv = nn.Conv2d(8, 6, 3, padding=1, groups=2)
    fast = use_nnpack_convs(conv, 'nnpack-precomputed')
    x_small, x_big = torch.randn(1, 8, 7, 5), torch.randn(1, 8, 41, 60)
    with torch.no_grad():
        # transformed once (per group) at the first call; the transforms do
        # not depend on the image size
        for x in (x_small, x_big, x_small):
            assert max_rel_diff(fast(x), conv(x)) < RTOL
        assert transforms == [torch.Size([3, 4, 3, 3])] * 2
        # 64 Winograd coefficients per 3x3 kernel, fp32
        assert kernel_transform_bytes(fast) == 6 * 4 * 64 * 4
        assert kernel_transform_bytes(conv) == 0
        # new weights (in place or loaded) -> transformed again
        fast.weight.mul_(-2)
        assert max_rel_diff(fast(x_big), F.conv2d(
            x_big, fast.weight, fast.bias, padding=1, groups=2)) < RTOL
        assert len(transforms) == 4
        fast.load_state_dict(conv.state_dict())
        assert max_rel_diff(fast(x_big), conv(x_big)) < RTOL
        assert len(transforms) == 6
        # a copy is not tied to the original's transforms
        twin = copy.deepcopy(fast)
        twin.weight.zero_()
        assert twin(x_small).sub(twin.bias.view(1, -1, 1, 1)).abs().max() \
            < 1e-6
        assert max_rel_diff(fast(x_big), conv(x_big)) < RTOL


def test_nnpack_transforms_on_every_call(monkeypatch):
    transforms = _counting(monkeypatch, 'transform_kernel')
    calls = _counting(monkeypatch)
    conv = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
    fast = use_nnpack_convs(conv, 'nnpack')
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        for _ in range(2):
            assert max_rel_diff(fast(x), conv(x)) < RTOL
    assert transforms == [] and [t for _, t in calls] == [False, False]


def test_thread_count_change():
    """NNPACK's pool follows torch.get_num_threads()."""
    conv = nn.Conv2d(16, 16, 3, padding=1)
    fast = use_nnpack_convs(conv, 'nnpack')
    x = torch.randn(1, 16, 30, 30)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            for n in (1, 3, threads):
                torch.set_num_threads(n)
                assert max_rel_diff(fast(x), conv(x)) < RTOL
                assert _nnpack.binding()._pool_threads == n
    finally:
        torch.set_num_threads(threads)


def test_small_inputs_run_pytorchs_conv(monkeypatch):
    """Where NNPACK's per-call costs outweigh Winograd (small maps, or a
    mosaic of few channels per group), the module runs nn.Conv2d's
    forward: bit-identical to it, no NNPACK call."""
    monkeypatch.setattr(NNPACKConv2d, 'skip_small', True)
    side = int(MIN_PIXELS ** 0.5)
    assert nnpack_pays_off((1, 8, side, side), 1, 8)
    assert not nnpack_pays_off((1, 8, side - 1, side), 1, 8)
    mside = int(MIN_MOSAIC_PIXELS ** 0.5)
    cg = MIN_MOSAIC_GROUP_CHANNELS
    assert nnpack_pays_off((1, cg, mside, mside), 2, cg)
    assert nnpack_pays_off((4, cg, mside // 2, mside // 2), 1, cg)
    assert not nnpack_pays_off((1, cg, mside, mside - 1), 2, cg)
    assert not nnpack_pays_off((1, 2 * cg, mside, mside), 2, cg // 2)

    calls = _counting(monkeypatch)
    c = 8
    plain = nn.Conv2d(c, 8, 3, padding=1)
    fast = use_nnpack_convs(plain, 'nnpack')
    small, big = torch.randn(1, c, side - 1, side), torch.randn(
        1, c, side, side)
    with torch.no_grad():
        assert torch.equal(fast(small), plain(small)) and calls == []
        assert max_rel_diff(fast(big), plain(big)) < RTOL
        assert len(calls) == 1
        calls.clear()
        dilated = nn.Conv2d(2 * cg, 2 * cg, 3, padding=2, dilation=2,
                            groups=2)
        fast = use_nnpack_convs(dilated, 'nnpack')
        x = torch.randn(1, 2 * cg, mside, mside)
        assert max_rel_diff(fast(x), dilated(x)) < RTOL
        assert len(calls) == 2                      # one per group
        calls.clear()
        x = torch.randn(1, 2 * cg, mside // 2, mside)     # too small
        assert torch.equal(fast(x), dilated(x)) and calls == []
