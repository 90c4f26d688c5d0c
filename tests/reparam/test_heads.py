"""The RepVGG backbone inside whole mmseg segmentors, with several decode
heads and a neck; reparameterize_model fuses the backbone AND folds the
heads' conv-BN pairs."""
import pytest
import torch

from mmseg.registry import MODELS
from repseg import find_unfused, reparameterize_model
from repseg.reparam.fusion import is_batchnorm
from repseg.testing import max_rel_diff, randomize_bn_

from tests.utils import REL_TOL

BN = dict(type='BN', requires_grad=True)
A0_CH = [48, 48, 96, 192, 1280]


def _segmentor(backbone, decode_head, neck=None, aux=True, norm_cfg=BN):
    cfg = dict(
        type='EncoderDecoder',
        backbone=backbone,
        decode_head=dict(decode_head, num_classes=19, norm_cfg=norm_cfg,
                         align_corners=False, dropout_ratio=0.1),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    if neck is not None:
        cfg['neck'] = neck
    if aux:
        cfg['auxiliary_head'] = dict(
            type='FCNHead', in_channels=A0_CH[3], in_index=-2, channels=16,
            num_convs=1, concat_input=False, num_classes=19,
            norm_cfg=norm_cfg)
    return MODELS.build(cfg)


def _outputs(model, x):
    feats = model.extract_feat(x)
    outs = [model.decode_head(feats)]
    if model.with_auxiliary_head:
        outs.append(model.auxiliary_head(feats))
    return outs


def _fuse_randomized(model, x, seed):
    """Randomize ``model``'s BN statistics (eval mode), fuse a copy; returns
    (reference outputs, fused model, fused outputs) on ``x``."""
    randomize_bn_(model, seed=seed).eval()
    with torch.no_grad():
        ref = _outputs(model, x)
        fused = reparameterize_model(model)
        return ref, fused, _outputs(fused, x)


HEADS = {
    'PSPHead': dict(type='PSPHead', in_channels=A0_CH[4], in_index=-1,
                    channels=32, pool_scales=(1, 2, 3, 6)),
    'FCNHead': dict(type='FCNHead', in_channels=A0_CH[4], in_index=-1,
                    channels=32, num_convs=2, concat_input=True),
    'ASPPHead': dict(type='ASPPHead', in_channels=A0_CH[4], in_index=-1,
                     channels=32, dilations=(1, 2, 3, 4)),
    'DepthwiseSeparableASPPHead': dict(
        type='DepthwiseSeparableASPPHead', in_channels=A0_CH[4],
        in_index=-1, channels=32, dilations=(1, 2, 3, 4),
        c1_in_channels=A0_CH[1], c1_channels=8),
    'UPerHead': dict(type='UPerHead', in_channels=A0_CH[1:], in_index=[
        0, 1, 2, 3], channels=32, pool_scales=(1, 2, 3, 6)),
}


@pytest.mark.parametrize('mode', ['full', 'fast'])
@pytest.mark.parametrize('head', list(HEADS))
def test_heads_forward_and_fuse(head, mode):
    backbone = dict(type='RepVGG', arch='A0', dilation_mode=mode,
                    out_indices=(1, 2, 3, 4), norm_cfg=BN)
    model = _segmentor(backbone, HEADS[head])
    x = torch.randn(1, 3, 64, 64)
    ref, fused, out = _fuse_randomized(model, x, seed=3)
    with torch.no_grad():
        # the full inference path (resize to the input size) too
        ref_seg = model.encode_decode(x, [dict(img_shape=(64, 64))])
        out_seg = fused.encode_decode(x, [dict(img_shape=(64, 64))])
    # logits at output stride 8 (4 for the heads that decode with stage 1)
    side = 16 if head in ('DepthwiseSeparableASPPHead', 'UPerHead') else 8
    assert ref[0].shape == (1, 19, side, side)
    assert ref_seg.shape == out_seg.shape == (1, 19, 64, 64)
    assert find_unfused(fused) == []
    assert find_unfused(model) != []
    # folded by numbers, not by the pair finder: no BatchNorm is left
    # anywhere (heads included) and the outputs still match
    assert not [n for n, m in fused.named_modules() if is_batchnorm(m)]
    assert any(is_batchnorm(m) for m in model.decode_head.modules())
    assert max_rel_diff(ref, out) <= REL_TOL
    assert max_rel_diff(ref_seg, out_seg) <= REL_TOL


def test_fpn_neck_multilevel():
    backbone = dict(type='RepVGG', arch='A0', out_indices=(1, 2, 3, 4),
                    norm_cfg=BN)
    neck = dict(type='FPN', in_channels=A0_CH[1:], out_channels=16,
                num_outs=4, norm_cfg=BN)
    head = dict(type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                feature_strides=[4, 8, 16, 32], channels=16)
    model = _segmentor(backbone, head, neck=neck, aux=False)
    x = torch.randn(1, 3, 64, 96)
    ref, fused, out = _fuse_randomized(model, x, seed=4)
    assert ref[0].shape == (1, 19, 16, 24)
    assert find_unfused(fused) == []
    assert not [n for n, m in fused.named_modules() if is_batchnorm(m)]
    assert max_rel_diff(ref, out) <= REL_TOL


def test_resnet_baseline_conv_bn_folded():
    """mmseg's own ResNetV1c-D8 PSPNet: deep stem (Sequential), Bottleneck
    conv/norm pairs, downsample branches and the heads all fold."""
    backbone = dict(type='ResNetV1c', depth=50, num_stages=4,
                    out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4),
                    strides=(1, 2, 1, 1), norm_cfg=BN, norm_eval=False,
                    style='pytorch', contract_dilation=True)
    head = dict(type='PSPHead', in_channels=2048, in_index=3, channels=32,
                pool_scales=(1, 2, 3, 6))
    model = _segmentor(backbone, head, aux=False)
    x = torch.randn(1, 3, 64, 64)
    ref, fused, out = _fuse_randomized(model, x, seed=5)
    assert find_unfused(fused) == []
    bns = [m for m in fused.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns == []
    assert max_rel_diff(ref, out) <= REL_TOL


def test_reparameterize_inplace():
    backbone = dict(type='RepVGG', arch='A0', out_indices=(3, 4))
    model = _segmentor(backbone, HEADS['PSPHead'], aux=False).train()
    same = reparameterize_model(model, inplace=True)
    assert same is model
    assert not model.training
    assert find_unfused(model) == []


@pytest.fixture
def one_process_group(tmp_path):
    """mmcv's MMSyncBN needs a process group to be built: one gloo rank
    (rendezvous through a file: no port another test could take)."""
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f"file://{tmp_path / 'pg'}",
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize('norm', ['SyncBN', 'MMSyncBN'])
def test_syncbn_heads_fold_numerically(norm, one_process_group):
    """torch's SyncBatchNorm and mmcv's MMSyncBN (eval mode runs on the
    CPU): folded, none left, and the outputs match with random
    statistics."""
    sync = dict(type=norm, requires_grad=True)
    backbone = dict(type='RepVGG', arch='A0', dilation_mode='fast',
                    out_indices=(1, 2, 3, 4), norm_cfg=sync)
    model = _segmentor(backbone, HEADS['PSPHead'], norm_cfg=sync)
    kinds = {type(m).__name__ for m in model.modules() if is_batchnorm(m)}
    assert kinds == {'SyncBatchNorm'}
    x = torch.randn(1, 3, 64, 64)
    ref, fused, out = _fuse_randomized(model, x, seed=9)
    assert not [n for n, m in fused.named_modules() if is_batchnorm(m)]
    assert max_rel_diff(ref, out) <= REL_TOL
