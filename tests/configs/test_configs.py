"""Every shipped config builds, follows the paper's recipe, and runs one
training iteration on the CPU."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmseg.registry import MODELS
from repseg.apis import load_cfg, replace_syncbn

from tests.utils import CONFIG_DIR, DEMO_CONFIG, small_cfg

CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py')))

TABLE8 = {
    'pspnet_repvgg_b2.py': ('B2', 'full', 2560, 640),
    'pspnet_repvgg_b2_fast.py': ('B2', 'fast', 2560, 640),
    'pspnet_repvgg_b1g2.py': ('B1g2', 'full', 2048, 512),
    'pspnet_repvgg_b1g2_fast.py': ('B1g2', 'fast', 2048, 512),
}
# the family's strongest backbone, with the B2 configs' recipe
D2SE = {
    'pspnet_repvgg_d2se.py': ('D2se', 'full', 2560, 640),
    'pspnet_repvgg_d2se_fast.py': ('D2se', 'fast', 2560, 640),
}


def test_the_lineup_is_shipped():
    for name in list(TABLE8) + list(D2SE) + [
            'pspnet_r50-d8.py', 'pspnet_r101-d8.py', 'pspnet_repvgg_a0.py']:
        assert name in CONFIGS


@pytest.mark.parametrize('name', CONFIGS)
def test_config_recipe(name):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    m = cfg.model
    decoder = dict(pspnet='PSPHead', upernet='UPerHead',
                   deeplabv3plus='DepthwiseSeparableASPPHead',
                   fcn='FCNHead')[name.split('_')[0]]
    assert m.decode_head.type == decoder
    if decoder in ('PSPHead', 'UPerHead'):
        assert tuple(m.decode_head.pool_scales) == (1, 2, 3, 6)
    assert m.auxiliary_head.type == 'FCNHead'
    assert m.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    poly = cfg.param_scheduler[0]
    assert poly.type == 'PolyLR' and poly.power == 0.9
    assert not poly.by_epoch and poly.end == cfg.train_cfg.max_iters
    assert dict(type='FusedEvalHook', check_equivalence=True) in \
        cfg.custom_hooks
    assert 'repseg' in cfg.custom_imports.imports
    assert cfg.val_evaluator.type == 'IoUMetric'
    if name in TABLE8 or name in D2SE or name in (
            'pspnet_r50-d8.py', 'pspnet_r101-d8.py') \
            or not name.startswith('pspnet'):
        # the paper's Cityscapes recipe
        assert cfg.optim_wrapper.optimizer.lr == 0.01
        assert cfg.train_cfg.max_iters == 7440   # 40 epochs x 2975 / 16
        assert cfg.train_dataloader.batch_size == 2   # x 8 GPUs = 16
        assert m.backbone.norm_cfg.type == 'SyncBN'
        assert m.test_cfg.mode == 'slide'
        assert tuple(m.test_cfg.crop_size) == (713, 713)
        crop = [t for t in cfg.train_dataloader.dataset.pipeline
                if t.type == 'RandomCrop'][0]
        assert tuple(crop.crop_size) == (713, 713)
        assert cfg.train_dataloader.dataset.type == 'CityscapesDataset'
    if name in TABLE8 or name in D2SE:
        arch, mode, c5, c4 = {**TABLE8, **D2SE}[name]
        assert m.backbone.type == 'RepVGG'
        assert (m.backbone.arch, m.backbone.dilation_mode) == (arch, mode)
        assert m.backbone.init_cfg.type == 'Pretrained'
        assert (m.decode_head.in_channels,
                m.auxiliary_head.in_channels) == (c5, c4)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_model(name):
    cfg = load_cfg(osp.join(CONFIG_DIR, name))   # CPU: SyncBN -> BN
    cfg.model.pretrained = None
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm)
                   for m in model.modules())
    assert model.decode_head.ignore_index == 255
    assert model.auxiliary_head.ignore_index == 255
    if name in TABLE8 or name in D2SE:
        assert model.backbone.output_stride == 8
        assert model.backbone.dilation_mode == {**TABLE8, **D2SE}[name][1]


def test_syncbn_replaced_in_one_place():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'pspnet_repvgg_b2.py'))
    # backbone, decode head and auxiliary head
    assert replace_syncbn(cfg.model) == 3
    assert replace_syncbn(cfg.model) == 0


# the other decoders' configs train with a small arch in test_decoders.py
@pytest.mark.parametrize('name', [c for c in CONFIGS
                                  if c.startswith('pspnet')])
def test_one_training_iteration(name, synthetic_root, tmp_path):
    cfg = small_cfg(osp.join(CONFIG_DIR, name), synthetic_root, tmp_path,
                    iters=1, val_interval=1000)
    runner = Runner.from_cfg(cfg)
    snapshot = {}

    class Snapshot(Hook):
        # after Runner.train() has initialized (or loaded) the weights
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if not snapshot:
                snapshot.update({
                    n: p.detach().clone()
                    for n, p in runner.model.named_parameters()
                    if p.requires_grad})

    runner.register_hook(Snapshot(), priority='VERY_LOW')
    runner.train()
    params = dict(runner.model.named_parameters())
    moved = [n for n in snapshot if not torch.equal(snapshot[n], params[n])]
    # the SGD step moved most trainable parameters (mmseg's ResNets start
    # each block's last BN at gamma 0, so the conv before it gets no
    # gradient in the first step; lr 0 moves none)
    assert len(moved) >= 0.75 * len(snapshot), (len(moved), len(snapshot))
    assert runner.iter == 1
    assert osp.isfile(osp.join(tmp_path, 'iter_1.pth'))


def test_poly_schedule_follows_an_overridden_max_iters():
    from repseg.apis import load_cfg
    cfg = load_cfg(DEMO_CONFIG, cfg_options={'train_cfg.max_iters': 10})
    assert cfg.param_scheduler[0].end == 10
    # an explicit end wins
    cfg = load_cfg(DEMO_CONFIG, cfg_options={'train_cfg.max_iters': 10,
                                             'param_scheduler.0.end': 7})
    assert cfg.param_scheduler[0].end == 7


@pytest.mark.parametrize('name', ['pspnet_repvgg_a0.py',
                                  'pspnet_repvgg_a0_synthetic.py'])
def test_training_lowers_the_loss_on_a_fixed_batch(name, synthetic_root,
                                                   tmp_path):
    """The config's own optimizer and learning rate, 5 steps on one batch
    from a fixed initialization: the loss goes down."""
    cfg = small_cfg(osp.join(CONFIG_DIR, name), synthetic_root, tmp_path,
                    iters=5)
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    optim = runner.build_optim_wrapper(cfg.optim_wrapper)
    batch = next(iter(runner.build_dataloader(cfg.train_dataloader)))
    runner.model.train()
    losses = []
    for _ in range(5):
        log = runner.model.train_step(batch, optim)
        losses.append(float(sum(v for k, v in log.items()
                                if k.startswith('decode.loss'))))
    assert losses[-1] < 0.9 * losses[0], losses


def test_each_runner_gets_a_visualizer_of_its_own(synthetic_root, tmp_path):
    """mmseg's configs name their visualizer 'visualizer', one mmengine
    global instance: a second runner in the process reused the first's,
    writing into the first run's folder (or one a test had removed).
    load_cfg drops the name, so each runner's is its own."""
    runners = []
    for name in ('first', 'second'):
        cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path / name)
        assert 'name' not in cfg.visualizer
        cfg.experiment_name = name
        runners.append(Runner.from_cfg(cfg))
    one, two = (r.visualizer for r in runners)
    assert one is not two
    for r, name in zip(runners, ('first', 'second')):
        assert r.visualizer._vis_backends, r.visualizer
        for backend in r.visualizer._vis_backends.values():
            assert str(tmp_path / name) in backend._save_dir
