"""The RepVGG backbone: archs, output strides, fusion of the whole network,
deploy checkpoints, freezing and errors."""
import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from repseg import find_unfused, reparameterize_model
from repseg.models import RepVGG, RepVGGBlock
from repseg.testing import max_rel_diff, randomize_bn_

from tests.utils import REL_TOL

ALL_ARCHS = list(RepVGG.arch_settings)
MODES = ['none', 'full', 'fast']

# Paper Table 4: params (M) of the inference-time model with its
# 1000-class classifier. B2g2 and B3g2 are not in the table.
PAPER_PARAMS_M = {
    'A0': 8.30, 'A1': 12.78, 'A2': 25.49, 'B0': 14.33, 'B1': 51.82,
    'B1g2': 41.36, 'B1g4': 36.12, 'B2': 80.31, 'B2g4': 55.77,
    'B3': 110.96, 'B3g4': 75.62,
}


def test_archs_are_the_papers():
    assert set(ALL_ARCHS) == {
        'A0', 'A1', 'A2', 'B0', 'B1', 'B1g2', 'B1g4', 'B2', 'B2g2', 'B2g4',
        'B3', 'B3g2', 'B3g4', 'D2se'
    }


@pytest.mark.parametrize('arch', sorted(PAPER_PARAMS_M))
def test_fused_params_match_paper_table4(arch):
    backbone = RepVGG(arch, deploy=True)
    head = nn.Linear(backbone.out_channels[-1], 1000)
    n = sum(p.numel() for p in backbone.parameters()) + sum(
        p.numel() for p in head.parameters())
    assert abs(n / 1e6 - PAPER_PARAMS_M[arch]) <= 0.02, n


@pytest.mark.parametrize('arch', ['B1g2', 'B2g4'])
def test_groupwise_layers(arch):
    groups = int(arch[-1])
    m = RepVGG(arch)
    layout_groups = [g for *_, g in m.layer_layout]
    # 1-based layers 3, 5, ..., 27 are groupwise, all others dense
    for layer, g in enumerate(layout_groups, start=1):
        expect = groups if layer >= 3 and layer % 2 == 1 else 1
        assert g == expect, (layer, g)
    blocks = [b for b in m.modules() if isinstance(b, RepVGGBlock)]
    assert [b.branch_3x3.conv.groups for b in blocks] == layout_groups
    assert [b.branch_1x1.conv.groups for b in blocks] == layout_groups


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_fused_backbone_equals_unfused(arch, mode):
    """Every arch x dilation mode, randomized BN, 1x3x64x64."""
    model = RepVGG(arch, dilation_mode=mode, out_indices=(0, 1, 2, 3, 4))
    # D2se's 48 random SE blocks are chaotic at gain 1: float32 rounding
    # grows to O(1) differences (each fused block alone agrees to 4e-5)
    randomize_bn_(model, seed=ALL_ARCHS.index(arch),
                  gain=0.8 if arch == 'D2se' else 1.0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fused = reparameterize_model(model)
        out = fused(x)
    assert find_unfused(fused) == []
    assert find_unfused(model) != []   # the source was copied, not fused
    assert len(out) == 5
    for r, o in zip(ref, out):
        assert r.shape == o.shape
        assert max_rel_diff(r, o) <= REL_TOL


@pytest.mark.parametrize('mode,strides', [
    ('none', (2, 4, 8, 16, 32)),
    ('full', (2, 4, 8, 8, 8)),
    ('fast', (2, 4, 8, 8, 8)),
])
def test_output_shapes(mode, strides):
    m = RepVGG('A0', dilation_mode=mode, out_indices=(0, 1, 2, 3, 4)).eval()
    outs = m(torch.randn(2, 3, 128, 96))
    assert [o.shape for o in outs] == [
        (2, c, 128 // s, 96 // s) for c, s in zip((48, 48, 96, 192, 1280),
                                                  strides)
    ]
    assert m.output_stride == strides[-1]


def _dilations(model):
    return [b.branch_3x3.conv.dilation[0] for b in model.modules()
            if isinstance(b, RepVGGBlock)]


def test_dilation_layouts():
    # B: 1 + 4 + 6 + 16 + 1 = 28 layers
    full = _dilations(RepVGG('B1g2', dilation_mode='full'))
    assert full == [1] * 11 + [2] * 16 + [4]
    fast = _dilations(RepVGG('B1g2', dilation_mode='fast'))
    assert fast == [1] * 23 + [2] * 4 + [4]
    assert _dilations(RepVGG('B1g2')) == [1] * 28
    # fast keeps the strides of full: output stride 8
    assert RepVGG('B1g2', dilation_mode='fast').output_stride == 8


def test_output_stride_16():
    m = RepVGG('A0', strides=(2, 2, 2, 2, 1), dilations=(1, 1, 1, 1, 2),
               out_indices=(4, )).eval()
    assert m.output_stride == 16
    assert m(torch.randn(1, 3, 64, 64))[0].shape == (1, 1280, 4, 4)
    assert _dilations(m)[-1] == 2 and set(_dilations(m)[:-1]) == {1}


@pytest.mark.parametrize('mode', MODES)
def test_deploy_state_dict_reloads_strictly(mode):
    model = randomize_bn_(RepVGG('B1g4', dilation_mode=mode)).eval()
    fused = reparameterize_model(model)
    deploy = RepVGG('B1g4', dilation_mode=mode, deploy=True).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(1, 3, 65, 71)
    with torch.no_grad():
        ref, out = model(x), deploy(x)
    assert max_rel_diff(ref, out) <= REL_TOL
    assert deploy.deploy and fused.deploy


def test_registered_in_mmseg():
    m = MODELS.build(dict(type='RepVGG', arch='A0', out_indices=(4, )))
    assert isinstance(m, RepVGG)


def test_custom_arch_dict():
    m = RepVGG(dict(num_blocks=(1, 1, 2, 1), width_factor=(0.5, 0.5, 0.5, 1),
                    group_layers={3: 2}), out_indices=(4, )).eval()
    assert m.out_channels == (32, 32, 64, 128, 512)
    assert [g for *_, g in m.layer_layout] == [1, 1, 2, 1, 1, 1]
    assert m(torch.randn(1, 3, 32, 32))[0].shape == (1, 512, 1, 1)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown RepVGG arch 'C9'.*'B1g2'"):
        RepVGG('C9')
    with pytest.raises(ValueError, match='missing'):
        RepVGG(dict(num_blocks=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match='4 entries'):
        RepVGG(dict(num_blocks=(1, 1, 1), width_factor=(1, 1, 1, 1)))


def test_unknown_dilation_mode():
    with pytest.raises(ValueError,
                       match=r"Unknown dilation_mode 'half'.*'fast'"):
        RepVGG('A0', dilation_mode='half')


@pytest.mark.parametrize('out_indices', [(5, ), (-1, ), (1, 7), ()])
def test_out_indices_out_of_range(out_indices):
    with pytest.raises(ValueError, match='out_indices'):
        RepVGG('A0', out_indices=out_indices)


def test_bad_strides_and_frozen_stages():
    with pytest.raises(ValueError, match='one entry per stage'):
        RepVGG('A0', strides=(2, 2, 2))
    with pytest.raises(ValueError, match='strides must be 1 or 2'):
        RepVGG('A0', strides=(2, 2, 2, 2, 3))
    with pytest.raises(ValueError, match='frozen_stages'):
        RepVGG('A0', frozen_stages=5)


def test_frozen_stages_and_norm_eval():
    m = RepVGG('A0', frozen_stages=1, norm_eval=False)
    m.train()
    for name in ('stem', 'stage_1'):
        stage = getattr(m, name)
        assert all(not p.requires_grad for p in stage.parameters())
        assert all(not b.training for b in stage.modules())
    assert all(p.requires_grad for p in m.stage_2.parameters())
    assert m.stage_2.training

    m = RepVGG('A0', norm_eval=True).train()
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert bns and all(not b.training for b in bns)
    assert m.stage_4.training   # convs still train


def test_syncbn_backbone_folds():
    """SyncBN cannot run forward on CPU in train mode, but it can be built,
    and its eval-mode statistics are folded like BN's."""
    m = RepVGG('A0', norm_cfg=dict(type='SyncBN', requires_grad=True))
    assert any(isinstance(b, nn.SyncBatchNorm) for b in m.modules())
    fused = reparameterize_model(m)
    assert not any(isinstance(b, nn.SyncBatchNorm) for b in fused.modules())
    assert find_unfused(fused) == []


def test_with_cp_trains():
    m = RepVGG('A0', with_cp=True, out_indices=(4, )).train()
    out = m(torch.randn(2, 3, 32, 32))[0]
    out.mean().backward()
    assert m.stem.branch_3x3.conv.weight.grad is not None


def test_a_typo_in_an_argument_names_the_nearest_one():
    with pytest.raises(TypeError, match=r"RepVGG has no argument "
                       r"'dilation_mod' \(did you mean 'dilation_mode'\?\)"):
        RepVGG('A0', dilation_mod='fast')
    # a ResNet argument (nothing close) keeps the _delete_=True advice
    with pytest.raises(TypeError, match='_delete_=True'):
        RepVGG('A0', depth=50)
