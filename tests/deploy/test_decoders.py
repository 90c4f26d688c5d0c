"""Off the PSPNet path: the UPerNet / DeepLabV3+ / FCN configs, deploy
configs that stock mmseg loads strictly, mmseg's ``pretrained=`` convention
and the channel pre-flight check."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from mmseg.registry import MODELS
from repseg import RepVGG, find_unfused
from repseg.apis import UsageError, load_cfg
from repseg.apis import test as run_test
from repseg.apis import train
from repseg.deploy import build_segmentor, check_model, convert_checkpoint
from repseg.reparam.fusion import is_batchnorm
from repseg.testing import randomize_bn_

from tests.utils import CONFIG_DIR, DEMO_CONFIG, REL_TOL, small_cfg

NEW_CONFIGS = sorted(
    osp.basename(p) for pattern in ('upernet_repvgg_*.py',
                                    'deeplabv3plus_repvgg_*.py',
                                    'fcn_repvgg_*.py')
    for p in glob.glob(osp.join(CONFIG_DIR, pattern)))


def test_new_configs_exist():
    expected = {
        'upernet_repvgg_b1g2.py', 'upernet_repvgg_b2.py',
        'deeplabv3plus_repvgg_b1g2.py', 'deeplabv3plus_repvgg_b1g2_fast.py',
        'deeplabv3plus_repvgg_b2.py', 'deeplabv3plus_repvgg_b2_fast.py',
        'deeplabv3plus_repvgg_b2_os16.py', 'fcn_repvgg_b1g2.py',
        'fcn_repvgg_b1g2_fast.py', 'fcn_repvgg_b2.py', 'fcn_repvgg_b2_fast.py'
    }
    assert expected <= set(NEW_CONFIGS)


@pytest.mark.parametrize('name', NEW_CONFIGS)
def test_new_config_builds_and_runs_at_its_arch(name):
    """The real arch (B1g2 / B2): the channels fit (checked before and by a
    forward), the recipe is the paper's, the stride is what the name
    says."""
    cfg = load_cfg(osp.join(CONFIG_DIR, name))
    assert cfg.param_scheduler[0].type == 'PolyLR'
    assert cfg.param_scheduler[0].power == 0.9
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.train_cfg.max_iters == 7440
    assert cfg.crop_size == (713, 713)
    assert cfg.model.pretrained is None
    check_model(cfg)
    model = build_segmentor(cfg).eval()
    bb = model.backbone
    assert isinstance(bb, RepVGG)
    assert bb.arch['name'] == ('B2' if '_b2' in name else 'B1g2')
    expected_os = 32 if name.startswith('upernet') else (
        16 if 'os16' in name else 8)
    assert bb.output_stride == expected_os
    assert bb.dilation_mode == ('fast' if name.endswith('_fast.py') else
                                'none' if expected_os != 8 else 'full')
    with torch.no_grad():
        out = model.encode_decode(torch.randn(1, 3, 64, 64),
                                  [dict(img_shape=(64, 64))])
    assert out.shape == (1, 19, 64, 64)


HEAD_TYPES = dict(upernet='UPerHead', fcn='FCNHead',
                  deeplabv3plus='DepthwiseSeparableASPPHead')


def _to_a0(cfg):
    """The same decoder with RepVGG-A0 and narrow heads: every channel
    number of the original arch becomes A0's width of the same stage."""
    arch = cfg.model.backbone.arch
    old = RepVGG(arch).out_channels
    new = RepVGG('A0').out_channels
    width = dict(zip(old, new))
    cfg.model.backbone.arch = 'A0'
    heads = [cfg.model.decode_head, cfg.model.auxiliary_head]
    for head in heads:
        ch = head.in_channels
        head.in_channels = ([width[c] for c in ch] if isinstance(
            ch, (list, tuple)) else width[ch])
        head.channels = 16
        if 'c1_in_channels' in head:
            head.c1_in_channels = width[head.c1_in_channels]
            head.c1_channels = 8
    return cfg


@pytest.mark.parametrize('name', NEW_CONFIGS)
def test_decoder_trains_evaluates_fused_and_converts(name, synthetic_root,
                                                     tmp_path):
    """Every new config, with A0 for its arch (the arch does not change
    what is tested): trains 2 iterations, evaluates the fused model,
    converts, reloads strictly with stock mmseg, and benchmarks with the
    decoder named in the report."""
    cfg = small_cfg(osp.join(CONFIG_DIR, name), synthetic_root,
                    tmp_path / 'work', crop=64, iters=2)
    cfg = _to_a0(cfg)
    runner = train(cfg)
    hook = [h for h in runner.hooks if type(h).__name__ == 'FusedEvalHook']
    assert hook and hook[0].last_max_diff is not None
    assert hook[0].last_max_diff <= REL_TOL * hook[0].last_max_abs
    assert 'mIoU' in runner.message_hub.get_info('eval_results', {}) or \
        'val/mIoU' in runner.message_hub.log_scalars
    ckpt = str(tmp_path / 'work' / 'iter_2.pth')
    out = str(tmp_path / 'deploy' / 'fused.pth')
    r = convert_checkpoint(cfg, ckpt, out, input_size=(64, 96))
    assert r['argmax_agreement'] == 1.0
    assert r['deploy_cfg_argmax_agreement'] == 1.0
    # the deploy config with plain mmseg, strictly
    deploy = Config.fromfile(r['deploy_config'])
    model = MODELS.build(deploy.model)
    load_checkpoint(model, out, strict=True)
    assert not find_unfused(model)
    # tools/benchmark.py CONFIG: the row names the decoder
    from repseg.benchmark import run_benchmark
    path = str(tmp_path / 'small.py')
    cfg.dump(path)
    result = run_benchmark([dict(name=name, config=path)],
                           input_size=(64, 64), flops=False, iters=1,
                           repeat=1, warmup=0, logger=lambda *a: None)
    assert result['rows'][0].decoder == HEAD_TYPES[name.split('_')[0]]


@pytest.fixture(scope='module')
def demo_training_ckpt(tmp_path_factory):
    """A demo-config (PSPNet-A0) checkpoint with random BN statistics."""
    model = randomize_bn_(build_segmentor(load_cfg(DEMO_CONFIG)), seed=3)
    path = str(tmp_path_factory.mktemp('deploy') / 'a0.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def _strict_stock_mmseg_check(cfg, ckpt, tmp_path):
    """convert, then build the deploy config with plain mmseg, load the
    fused file with strict=True and compare with repseg's fused model."""
    out = str(tmp_path / 'fused.pth')
    r = convert_checkpoint(cfg, ckpt, out, input_size=(72, 88))
    deploy = Config.fromfile(r['deploy_config'])
    assert deploy.work_dir != cfg.work_dir
    stock = MODELS.build(deploy.model)
    # no missing or unexpected key: strict=True raises on any
    load_checkpoint(stock, out, strict=True, map_location='cpu')
    assert not any(is_batchnorm(m) for m in stock.modules())
    from repseg.deploy import build_fused
    fused = build_fused(cfg, ckpt)
    stock.eval()
    x = torch.randn(1, 3, 72, 88)
    meta = [dict(img_shape=(72, 88))]
    with torch.no_grad():
        a = fused.encode_decode(x, meta)
        b = stock.encode_decode(x, meta)
    assert (a - b).abs().max() <= REL_TOL * a.abs().max()
    assert (a.argmax(1) == b.argmax(1)).all()
    return deploy


def test_deploy_config_of_pspnet_loads_strictly_in_stock_mmseg(
        demo_training_ckpt, tmp_path):
    deploy = _strict_stock_mmseg_check(load_cfg(DEMO_CONFIG),
                                       demo_training_ckpt, tmp_path)
    assert deploy.model.backbone.deploy is True
    assert deploy.model.decode_head.norm_cfg is None
    assert deploy.model.auxiliary_head.norm_cfg is None


def test_deploy_config_of_resnet_baseline_loads_strictly(tmp_path):
    cfg = load_cfg(osp.join(CONFIG_DIR, 'pspnet_r50-d8.py'),
                   cfg_options={'model.backbone.depth': 18,
                                'model.decode_head.in_channels': 512,
                                'model.decode_head.channels': 32,
                                'model.auxiliary_head.in_channels': 256,
                                'model.auxiliary_head.channels': 16})
    cfg.model.backbone.pop('init_cfg', None)
    model = randomize_bn_(build_segmentor(cfg), seed=5)
    ckpt = str(tmp_path / 'r18.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    deploy = _strict_stock_mmseg_check(cfg, ckpt, tmp_path)
    assert deploy.model.backbone.norm_cfg == dict(type='FoldedNorm')
    assert deploy.model.backbone.conv_cfg == dict(type='ConvWithBias')


def test_pretrained_argument_follows_mmseg_convention(tmp_path):
    bb = RepVGG('A0', pretrained=str(tmp_path / 'w.pth'))
    assert bb.init_cfg == dict(type='Pretrained',
                               checkpoint=str(tmp_path / 'w.pth'))
    with pytest.raises(ValueError, match='ResNet weights') as e:
        RepVGG('A0', pretrained='open-mmlab://resnet50_v1c')
    assert 'model.pretrained=None' in str(e.value)
    with pytest.raises(TypeError, match='_delete_=True'):
        RepVGG('A0', depth=50)


def test_resnet_base_without_delete_is_a_clear_error(tmp_path):
    """Inheriting mmseg's ResNet base and forgetting _delete_=True / the
    pretrained name: one UsageError before the Runner starts."""
    cfg_file = tmp_path / 'bad.py'
    cfg_file.write_text(
        "_base_ = 'mmseg::_base_/models/fcn_r50-d8.py'\n"
        "custom_imports = dict(imports=['repseg'])\n"
        "model = dict(backbone=dict(type='RepVGG', arch='A0'))\n")
    cfg = load_cfg(str(cfg_file))
    with pytest.raises(UsageError, match='_delete_=True'):
        check_model(cfg)


def test_wrong_channels_are_refused_before_the_first_forward():
    cfg = load_cfg(osp.join(CONFIG_DIR, 'upernet_repvgg_b1g2.py'),
                   cfg_options={'model.decode_head.in_channels':
                                [256, 512, 1024, 2048]})
    with pytest.raises(UsageError) as e:
        check_model(cfg)
    msg = str(e.value)
    assert 'RepVGG-B1g2 gives [128, 256, 512, 2048]' in msg
    assert 'model.decode_head expects 256 channels at backbone output 0' \
        in msg
    cfg = load_cfg(osp.join(CONFIG_DIR, 'deeplabv3plus_repvgg_b2.py'),
                   cfg_options={'model.decode_head.c1_in_channels': 64})
    with pytest.raises(UsageError, match='c1_in_channels'):
        check_model(cfg)


def test_test_api_refuses_wrong_channels_too(demo_training_ckpt,
                                             synthetic_root, tmp_path):
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path,
                    cfg_options={'model.decode_head.in_channels': 999})
    with pytest.raises(UsageError, match='expects 999 channels'):
        run_test(cfg, demo_training_ckpt)
