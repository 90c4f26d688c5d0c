"""ImageNet-pretrained weights in the official RepVGG, timm and mmpretrain
layouts (training-time and deploy, torch and safetensors files) load through
the backbone's init_cfg and reproduce the source model's features."""
import re

import pytest
import torch
from safetensors.torch import save_file

from mmseg.registry import MODELS
from repseg import reparameterize_model
from repseg.engine import CheckpointError
from repseg.models import RepVGG
from repseg.models.pretrained import detect_layout
from repseg.testing import max_rel_diff, randomize_bn_

from tests.utils import REL_TOL


def _source(arch='A0', seed=0):
    torch.manual_seed(seed)
    model = randomize_bn_(RepVGG(arch, out_indices=(0, 1, 2, 3, 4)),
                          seed=seed).eval()
    return model


def _official(sd, head=True):
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stem\.', 'stage0.', k)
        k = re.sub(r'^stage_(\d)\.', r'stage\1.', k)
        for a, b in (('branch_3x3', 'rbr_dense'), ('branch_1x1', 'rbr_1x1'),
                     ('branch_norm', 'rbr_identity'),
                     ('branch_reparam', 'rbr_reparam')):
            k = k.replace(f'.{a}.', f'.{b}.')
        out[k] = v
    if head:
        out['linear.weight'] = torch.randn(1000, 1280)
        out['linear.bias'] = torch.randn(1000)
    return out


def _timm(sd):
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stage_(\d)\.',
                   lambda m: f'stages.{int(m.group(1)) - 1}.', k)
        for a, b in (('branch_3x3', 'conv_kxk'), ('branch_1x1', 'conv_1x1'),
                     ('branch_norm', 'identity'),
                     ('branch_reparam', 'reparam_conv')):
            k = k.replace(f'.{a}.', f'.{b}.')
        out[k] = v.contiguous()
    out['head.fc.weight'] = torch.randn(1000, 1280)
    out['head.fc.bias'] = torch.randn(1000)
    return out


def _mmpretrain(sd):
    out = {f'backbone.{k}': v for k, v in sd.items()}
    out['head.fc.weight'] = torch.randn(1000, 1280)
    out['head.fc.bias'] = torch.randn(1000)
    return dict(meta=dict(mmengine_version='0.10.7', epoch=120),
                state_dict=out)


def _load(path, deploy=False, arch='A0'):
    m = RepVGG(arch, out_indices=(0, 1, 2, 3, 4), deploy=deploy,
               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    m.init_weights()
    return m.eval()


def _feats(m, x):
    with torch.no_grad():
        return m(x)


X = torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize('wrap', ['plain', 'state_dict', 'module',
                                  'state_dict+module'])
def test_official_training_file(tmp_path, wrap):
    src = _source()
    sd = _official(src.state_dict())
    if 'module' in wrap:
        sd = {f'module.{k}': v for k, v in sd.items()}
    if 'state_dict' in wrap:
        sd = dict(state_dict=sd)
    path = tmp_path / 'RepVGG-A0-train.pth'
    torch.save(sd, path)
    loaded = _load(path)
    for a, b in zip(_feats(src, X), _feats(loaded, X)):
        assert torch.equal(a, b)


def test_official_deploy_file_into_both_forms(tmp_path):
    src = _source()
    fused = reparameterize_model(src)
    path = tmp_path / 'RepVGG-A0-deploy.pth'
    torch.save(_official(fused.state_dict()), path)
    ref = _feats(src, X)
    into_deploy = _load(path, deploy=True)
    for a, b in zip(ref, _feats(into_deploy, X)):
        assert max_rel_diff(a, b) <= REL_TOL
    # into the training-time form: fused kernel in the 3x3 branch
    into_train = _load(path, deploy=False)
    assert hasattr(into_train.stem, 'branch_3x3')
    for a, b in zip(ref, _feats(into_train, X)):
        assert max_rel_diff(a, b) <= REL_TOL


def test_deploy_file_into_training_backbone_with_other_eps(tmp_path):
    src = _source()
    path = tmp_path / 'RepVGG-A0-deploy.pth'
    torch.save(_official(reparameterize_model(src).state_dict()), path)
    m = RepVGG('A0', out_indices=(0, 1, 2, 3, 4),
               norm_cfg=dict(type='BN', eps=1e-2),
               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    m.init_weights()
    for a, b in zip(_feats(src, X), _feats(m.eval(), X)):
        assert max_rel_diff(a, b) <= REL_TOL


def test_training_file_into_deploy_backbone(tmp_path):
    src = _source()
    path = tmp_path / 'a0.pth'
    torch.save(_official(src.state_dict()), path)
    m = _load(path, deploy=True)
    for a, b in zip(_feats(src, X), _feats(m, X)):
        assert max_rel_diff(a, b) <= REL_TOL


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
@pytest.mark.parametrize('deploy_file', [False, True])
def test_timm_files(tmp_path, fmt, deploy_file):
    src = _source()
    sd = (reparameterize_model(src) if deploy_file else src).state_dict()
    sd = _timm(sd)
    assert detect_layout(sd) == 'timm'
    path = tmp_path / f'repvgg_a0.{fmt}'
    if fmt == 'safetensors':
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    m = _load(path, deploy=deploy_file)
    for a, b in zip(_feats(src, X), _feats(m, X)):
        assert max_rel_diff(a, b) <= REL_TOL


@pytest.mark.parametrize('deploy_file', [False, True])
def test_mmpretrain_files(tmp_path, deploy_file):
    src = _source()
    sd = (reparameterize_model(src) if deploy_file else src).state_dict()
    path = tmp_path / 'mmpretrain.pth'
    torch.save(_mmpretrain(sd), path)
    m = _load(path, deploy=deploy_file)
    for a, b in zip(_feats(src, X), _feats(m, X)):
        assert max_rel_diff(a, b) <= REL_TOL


def test_through_a_segmentor_config(tmp_path):
    src = _source()
    path = tmp_path / 'a0.pth'
    torch.save(_official(src.state_dict()), path)
    seg = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='RepVGG', arch='A0', out_indices=(3, 4),
                      init_cfg=dict(type='Pretrained', checkpoint=str(path))),
        decode_head=dict(type='FCNHead', in_channels=1280, in_index=1,
                         channels=8, num_classes=19, num_convs=1)))
    seg.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(seg.backbone.state_dict()[k], v), k


def test_wrong_arch_is_named(tmp_path):
    path = tmp_path / 'a1.pth'
    torch.save(_official(RepVGG('A1').state_dict()), path)
    with pytest.raises(CheckpointError, match=r"holds A1 weights.*'A0'"):
        _load(path)


def test_wrong_groups_are_named(tmp_path):
    path = tmp_path / 'b1g4.pth'
    torch.save(_official(RepVGG('B1g4', deploy=True).state_dict()), path)
    with pytest.raises(CheckpointError, match=r"holds B1g4 weights.*'B1g2'"):
        _load(path, arch='B1g2')


def test_bad_files(tmp_path):
    good = tmp_path / 'g.pth'
    torch.save(_official(_source().state_dict()), good)
    data = good.read_bytes()
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError, match='truncated'):
        _load(bad)
    txt = tmp_path / 'page.html'
    txt.write_text('<html>404 Not Found</html>')
    with pytest.raises(CheckpointError, match='truncated or not'):
        _load(txt)
    other = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7),
                'fc.weight': torch.zeros(10, 64)}, other)
    with pytest.raises(CheckpointError, match='no RepVGG weights'):
        _load(other)
    with pytest.raises(CheckpointError, match='does not exist'):
        _load(tmp_path / 'missing.pth')
