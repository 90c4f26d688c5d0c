"""Property-based tests of the fusion: random channels, groups, strides,
dilations, input sizes and BN statistics; fused == unfused every time."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repseg.models import RepVGGBlock
from repseg.testing import max_rel_diff

from tests.utils import REL_TOL


@st.composite
def block_cases(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    in_ch = groups * draw(st.integers(1, 4))
    same = draw(st.booleans())
    out_ch = in_ch if same else groups * draw(st.integers(1, 4))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2, 3, 4]))
    h = draw(st.integers(1, 23))
    w = draw(st.integers(1, 23))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.01, 10.0))
    return in_ch, out_ch, stride, dilation, groups, h, w, seed, scale


@settings(max_examples=60, deadline=None)
@given(block_cases())
def test_block_fusion_property(case):
    in_ch, out_ch, stride, dilation, groups, h, w, seed, scale = case
    gen = torch.Generator().manual_seed(seed)
    block = RepVGGBlock(in_ch, out_ch, stride, dilation, groups)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * scale)
                m.running_var.copy_(
                    torch.rand(n, generator=gen) * 4 * scale + 1e-3)
                m.eps = 1e-5
    block.eval()
    x = torch.randn(2, in_ch, h, w, generator=gen)
    with torch.no_grad():
        ref = block(x)
        block.switch_to_deploy()
        out = block(x)
    assert out.shape == ref.shape
    if ref.abs().max() > 0:
        assert max_rel_diff(ref, out) <= REL_TOL
    else:
        assert out.abs().max() <= 1e-6
