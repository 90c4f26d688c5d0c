"""RepVGG-D2se and squeeze-and-excitation blocks: the official parameter
counts, SE placed as the references place it and pooled over the whole map,
exact fusion with the SE kept, strict reloads, and the official, timm and
mmpretrain checkpoint layouts (their SE key names written here as each
source's code names them, not derived from repseg's mapping)."""
import numpy as np
import pytest
import torch

from repseg import reparameterize_model
from repseg.engine import CheckpointError
from repseg.models import RepVGG, RepVGGBlock
from repseg.models.se import SELayer, se_channels
from repseg.testing import max_rel_diff, randomize_bn_

from tests.utils import REL_TOL

# the official code's create_RepVGG_D2se, its 1000-class classifier
# (2560 * 1000 + 1000) removed
D2SE_TRAIN = 133_334_836 - 2_561_000
D2SE_FUSED = 120_387_572 - 2_561_000


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _randomize_se_(model, seed=0, scale=0.5):
    """SE weights large enough that the gates differ from 0.5 per channel
    and per image."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, SELayer):
            for conv in (m.conv1.conv, m.conv2.conv):
                conv.weight.data = torch.randn(conv.weight.shape,
                                               generator=g) * scale
                conv.bias.data = torch.randn(conv.bias.shape,
                                             generator=g) * scale
    return model


def test_d2se_parameter_counts_are_the_official_codes():
    assert _params(RepVGG('D2se')) == D2SE_TRAIN
    assert _params(RepVGG('D2se', deploy=True)) == D2SE_FUSED
    assert _params(reparameterize_model(RepVGG('D2se'))) == D2SE_FUSED


def test_d2se_layout():
    m = RepVGG('D2se', dilation_mode='fast')
    blocks = [b for b in m.modules() if isinstance(b, RepVGGBlock)]
    assert len(blocks) == 1 + 8 + 14 + 24 + 1
    # B2's widths; SE (out // 16) in every block, the stem included
    assert m.out_channels == (64, 160, 320, 640, 2560)
    assert all(b.se_layer is not None for b in blocks)
    assert m.stem.se_layer.conv1.conv.out_channels == 4
    assert m.stage_4[0].se_layer.conv1.conv.out_channels == 160
    # 'fast': only the last 5 layers dilated (4 of stage 3, stage 4)
    dil = [b.branch_3x3.conv.dilation[0] for b in blocks]
    assert dil == [1] * 43 + [2] * 4 + [4]
    full = RepVGG('D2se', dilation_mode='full')
    dil = [b.branch_3x3.conv.dilation[0] for b in full.modules()
           if isinstance(b, RepVGGBlock)]
    assert dil == [1] * 23 + [2] * 24 + [4]
    assert full.output_stride == m.output_stride == 8


def test_se_cfg_on_any_arch_and_its_errors():
    m = RepVGG('A0', se_cfg=dict(ratio=16, divisor=1))
    assert all(b.se_layer is not None for b in m.modules()
               if isinstance(b, RepVGGBlock))
    assert RepVGG('A0').stem.se_layer is None
    assert se_channels(64, 16, 1) == 4 and se_channels(64, 16, 8) == 8
    with pytest.raises(ValueError, match='ratio'):
        RepVGG('A0', se_cfg=dict(ratio=0))
    with pytest.raises(TypeError, match='se_cfg must be a dict'):
        RepVGG('A0', se_cfg=True)


def test_a_registered_block_without_se_cfg():
    """A block registered through REPVGG_BLOCKS without an se_cfg argument
    builds without SE, and with se_cfg is refused with one line naming the
    blocks that take it."""
    from repseg.models.repvgg import REPVGG_BLOCKS

    class PlainBlock(RepVGGBlock):
        def __init__(self, in_channels, out_channels, stride=1, dilation=1,
                     groups=1, conv_cfg=None, norm_cfg=dict(type='BN'),
                     act_cfg=dict(type='ReLU'), deploy=False,
                     with_cp=False):
            super().__init__(in_channels, out_channels, stride=stride,
                             dilation=dilation, groups=groups,
                             conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                             act_cfg=act_cfg, deploy=deploy, with_cp=with_cp)

    REPVGG_BLOCKS.register_module(name='plain_test', module=PlainBlock)
    try:
        m = RepVGG('A0', block_type='plain_test')
        assert isinstance(m.stem, PlainBlock) and m.stem.se_layer is None
        with pytest.raises(ValueError, match=r"'plain_test' \(PlainBlock\) "
                           r"takes no se_cfg.*'qarepvgg', 'repvgg'"):
            RepVGG('A0', block_type='plain_test',
                   se_cfg=dict(ratio=16, divisor=1))
    finally:
        REPVGG_BLOCKS.module_dict.pop('plain_test')


def test_init_gate_adds_se_near_the_identity():
    """se_cfg init_gate=g: after init_weights every gate is g, so a block
    with SE computes ReLU(g * s) = g * (the block without SE) with the same
    branches, whatever the input; a plain checkpoint then loads into the
    SE network with only the SE keys missing."""
    torch.manual_seed(0)
    plain = RepVGGBlock(16, 16).eval()
    se = RepVGGBlock(16, 16, se_cfg=dict(ratio=4, divisor=1,
                                         init_gate=0.98))
    se.init_weights()
    se.eval()
    missing, unexpected = se.load_state_dict(plain.state_dict(),
                                             strict=False)
    assert not unexpected and missing and all(
        k.startswith('se_layer.conv2') or k.startswith('se_layer.conv1')
        for k in missing)
    x = torch.randn(2, 16, 12, 20)
    gate = se.se_layer.gate(x)
    assert torch.allclose(gate, torch.full_like(gate, 0.98), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(se(x), 0.98 * plain(x), rtol=1e-5, atol=1e-6)
    # through the backbone's init: every SE, in the stem and in the stages
    net = RepVGG('A0', se_cfg=dict(ratio=16, divisor=1, init_gate=0.98))
    net.init_weights()
    gates = [m.gate(torch.randn(1, m.channels, 5, 7)) for m in net.modules()
             if isinstance(m, SELayer)]
    assert len(gates) == 22
    assert all(torch.allclose(g, torch.full_like(g, 0.98), atol=1e-6)
               for g in gates)
    with pytest.raises(ValueError, match='init_gate must be in'):
        RepVGG('A0', se_cfg=dict(ratio=16, init_gate=1.0))


def test_se_is_after_the_sum_and_pools_the_whole_map():
    """At 96x160 (not square) the block's output is
    ReLU(s * sigmoid(W2 ReLU(W1 mean_HW(s) + b1) + b2)), s the sum of the
    branches, computed here per image in float64."""
    torch.manual_seed(0)
    block = RepVGGBlock(8, 8, se_cfg=dict(ratio=4, divisor=1))
    randomize_bn_(block, seed=1)
    _randomize_se_(block, scale=0.3)
    block.se_layer.conv1.conv.bias.data.fill_(1.0)   # the squeeze active
    block.eval()
    x = torch.randn(2, 8, 96, 160)
    x[1] *= 3   # a different mean per image
    x[..., 100:] += 2   # and over the width
    with torch.no_grad():
        s = (block.branch_3x3(x) + block.branch_1x1(x) +
             block.branch_norm(x)).double().numpy()
        out = block(x).double().numpy()
    se = block.se_layer
    w1 = se.conv1.conv.weight.detach().double().numpy()[:, :, 0, 0]
    b1 = se.conv1.conv.bias.detach().double().numpy()
    w2 = se.conv2.conv.weight.detach().double().numpy()[:, :, 0, 0]
    b2 = se.conv2.conv.bias.detach().double().numpy()
    gates = []
    for i in range(2):
        mean = s[i].mean(axis=(1, 2))                 # the whole 96x160 map
        gate = 1 / (1 + np.exp(-(w2 @ np.maximum(w1 @ mean + b1, 0) + b2)))
        # gates away from saturation, per image: a wrong mean changes them
        assert 0.05 < gate.min() and gate.max() < 0.95, gate
        gates.append(gate)
        want = np.maximum(s[i] * gate[:, None, None], 0)
        np.testing.assert_allclose(out[i], want, rtol=1e-5, atol=1e-5)
    assert np.abs(gates[0] - gates[1]).max() > 5e-4


@pytest.mark.parametrize('mode', ['full', 'fast'])
def test_d2se_fused_equals_unfused_at_a_non_square_input(mode):
    """Random BN (gammas x 0.8: at x 1 a random D2se is chaotic, float32
    rounding growing to O(1) through stage 3's 24 SE blocks while each
    fused block alone agrees to 4e-5) and random SE gates."""
    model = RepVGG('D2se', dilation_mode=mode, out_indices=(0, 1, 2, 3, 4))
    randomize_bn_(model, seed=3, gain=0.8)
    _randomize_se_(model, seed=3, scale=0.1)
    model.eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        ref = model(x)
        fused = reparameterize_model(model)
        out = fused(x)
    assert all(b.se_layer is not None for b in fused.modules()
               if isinstance(b, RepVGGBlock))
    for r, o in zip(ref, out):
        assert r.shape == o.shape
        assert max_rel_diff(r, o) <= REL_TOL
    deploy = RepVGG('D2se', dilation_mode=mode, out_indices=(0, 1, 2, 3, 4),
                    deploy=True).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        for r, o in zip(ref, deploy(x)):
            assert max_rel_diff(r, o) <= REL_TOL


def test_qarepvgg_blocks_with_se_fuse_exactly():
    arch = dict(num_blocks=(2, 2, 2, 1), width_factor=(0.5, 0.5, 0.5, 0.5))
    model = RepVGG(arch, block_type='qarepvgg', dilation_mode='fast',
                   se_cfg=dict(ratio=8, divisor=1), out_indices=(4, ))
    randomize_bn_(model, seed=5)
    _randomize_se_(model, seed=5)
    model.eval()
    x = torch.randn(2, 3, 40, 72)
    with torch.no_grad():
        ref = model(x)[0]
        out = reparameterize_model(model)(x)[0]
    assert max_rel_diff(ref, out) <= REL_TOL


# ---------------------------------------------------------------- layouts
# A small SE RepVGG (every block with SE, the stem included) written out in
# each source's key names, module by module.
SMALL = dict(num_blocks=(2, 2, 2, 1), width_factor=(0.5, 0.5, 0.5, 0.5),
             se_cfg=dict(ratio=16, divisor=1))
BN = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# each source's names of: 3x3 conv, its BN, 1x1 conv, its BN, identity BN,
# fused conv, SE squeeze conv, SE excitation conv
NAMES = {
    # DingXiaoH/RepVGG repvgg.py: conv_bn() 'conv'/'bn', rbr_identity,
    # rbr_reparam, SEBlock(down, up) as 'se'
    'official': ('rbr_dense.conv', 'rbr_dense.bn', 'rbr_1x1.conv',
                 'rbr_1x1.bn', 'rbr_identity', 'rbr_reparam', 'se.down',
                 'se.up'),
    # timm byobnet.py RepVggBlock: ConvNormAct 'conv'/'bn', identity
    # (BatchNormAct2d), reparam_conv, attn = SEModule(fc1, fc2)
    'timm': ('conv_kxk.conv', 'conv_kxk.bn', 'conv_1x1.conv', 'conv_1x1.bn',
             'identity', 'reparam_conv', 'attn.fc1', 'attn.fc2'),
    # mmpretrain repvgg.py RepVGGBlock: create_conv_bn() 'conv'/'norm',
    # branch_norm, branch_reparam, se_layer = SELayer(conv1, conv2 as
    # ConvModules: '.conv')
    'mmpretrain': ('branch_3x3.conv', 'branch_3x3.norm', 'branch_1x1.conv',
                   'branch_1x1.norm', 'branch_norm', 'branch_reparam',
                   'se_layer.conv1.conv', 'se_layer.conv2.conv'),
}


def _prefix(source, stage, j):
    if source == 'official':
        return 'stage0' if stage == 0 else f'stage{stage}.{j}'
    if source == 'timm':
        return 'stem' if stage == 0 else f'stages.{stage - 1}.{j}'
    return 'backbone.stem' if stage == 0 else f'backbone.stage_{stage}.{j}'


def _write(model, source):
    """``model`` (repseg, training or fused) as ``source`` saves it."""
    k3, bn3, k1, bn1, ident, rep, se1, se2 = NAMES[source]
    out = {}
    blocks = [(0, 0, model.stem)] + [
        (s, j, b) for s in range(1, 5)
        for j, b in enumerate(getattr(model, f'stage_{s}'))]
    for s, j, b in blocks:
        p = _prefix(source, s, j)
        if b.deploy:
            out[f'{p}.{rep}.weight'] = b.branch_reparam.weight
            out[f'{p}.{rep}.bias'] = b.branch_reparam.bias
        else:
            out[f'{p}.{k3}.weight'] = b.branch_3x3.conv.weight
            out[f'{p}.{k1}.weight'] = b.branch_1x1.conv.weight
            for name, bn in ((bn3, b.branch_3x3.bn), (bn1, b.branch_1x1.bn),
                             (ident, b.branch_norm)):
                for a in BN if bn is not None else ():
                    out[f'{p}.{name}.{a}'] = getattr(bn, a)
        for name, conv in ((se1, b.se_layer.conv1.conv),
                           (se2, b.se_layer.conv2.conv)):
            out[f'{p}.{name}.weight'] = conv.weight
            out[f'{p}.{name}.bias'] = conv.bias
    out = {k: v.detach().clone() for k, v in out.items()}
    head = dict(official='linear', timm='head.fc', mmpretrain='head.fc')
    out[f'{head[source]}.weight'] = torch.randn(1000, 256)
    out[f'{head[source]}.bias'] = torch.randn(1000)
    if source == 'mmpretrain':
        return dict(meta=dict(mmengine_version='0.10.7'), state_dict=out)
    return out


@pytest.fixture(scope='module')
def source_model():
    torch.manual_seed(0)
    m = RepVGG(SMALL, out_indices=(0, 1, 2, 3, 4))
    randomize_bn_(m, seed=7)
    return _randomize_se_(m, seed=7).eval()


@pytest.mark.parametrize('into_deploy', [False, True])
@pytest.mark.parametrize('fused_file', [False, True])
@pytest.mark.parametrize('source', sorted(NAMES))
def test_se_checkpoints_of_every_source_load_strictly(
        tmp_path, source_model, source, fused_file, into_deploy):
    src = reparameterize_model(source_model) if fused_file else source_model
    path = tmp_path / f'{source}.pth'
    torch.save(_write(src, source), path)
    m = RepVGG(SMALL, out_indices=(0, 1, 2, 3, 4), deploy=into_deploy,
               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    m.init_weights()   # strict: a key left over or missing is an error
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        for a, b in zip(source_model(x), m.eval()(x)):
            assert max_rel_diff(a, b) <= REL_TOL


def test_se_file_into_a_backbone_without_se_is_refused(tmp_path,
                                                       source_model):
    path = tmp_path / 'se.pth'
    torch.save(_write(source_model, 'official'), path)
    arch = {k: v for k, v in SMALL.items() if k != 'se_cfg'}
    m = RepVGG(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError,
                       match='with squeeze-and-excitation'):
        m.init_weights()


def test_the_equalization_rescales_through_the_se_exactly():
    from repseg.reparam.equalize import relu_pairs, rescale_pair_
    model = RepVGG(SMALL, out_indices=(4, ))
    randomize_bn_(model, seed=2)
    _randomize_se_(model, seed=2)
    fused = reparameterize_model(model.eval())
    pairs = relu_pairs(fused)
    block_pairs = [p for p in pairs if p.through]
    # every block feeds the next through its SE: 7 block -> block pairs
    assert len(block_pairs) == 7
    x = torch.randn(2, 3, 40, 72)
    with torch.no_grad():
        ref = fused(x)[0]
        g = torch.Generator().manual_seed(0)
        for p in block_pairs:
            scale = torch.rand(p[1].out_channels, generator=g) * 4 + 0.1
            rescale_pair_(p[1], p[3], scale, p.through)
        out = fused(x)[0]
    assert max_rel_diff(ref, out) <= REL_TOL
    # without the squeeze conv the gate changes: not the same function
    model2 = reparameterize_model(model.eval())
    p = [q for q in relu_pairs(model2) if q.through][0]
    with torch.no_grad():
        rescale_pair_(p[1], p[3], torch.full((p[1].out_channels, ), 3.0))
        assert max_rel_diff(ref, model2(x)[0]) > 1e-3
