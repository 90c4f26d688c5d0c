"""Inputs that must simply work: grayscale and RGBA images, images smaller
than the crop; and the SyncBN-on-CPU fallback."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from repseg.apis import load_cfg
from repseg.datasets import check_cityscapes, generate_synthetic_cityscapes

from tests.utils import CONFIG_DIR, DEMO_CONFIG, small_cfg


@pytest.mark.parametrize('mode,size', [('L', (128, 256)),
                                       ('RGBA', (128, 256)),
                                       ('RGB', (40, 48))])   # < 64x64 crop
def test_training_and_evaluation_work(tmp_path, mode, size):
    root = str(tmp_path / 'data')
    generate_synthetic_cityscapes(root, num_train=2, num_val=2,
                                  height=size[0], width=size[1],
                                  image_mode=mode)
    assert check_cityscapes(root) == dict(train=2, val=2)
    cfg = small_cfg(DEMO_CONFIG, root, tmp_path / 'w', crop=64, iters=1,
                    val_interval=1)
    # keep the small images small: no upscaling in the pipeline
    if size[0] < 64:
        for t in cfg.train_dataloader.dataset.pipeline:
            if t['type'] == 'RandomResize':
                t['scale'], t['ratio_range'] = (size[1], size[0]), (1.0, 1.0)
        for t in cfg.val_dataloader.dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = (size[1], size[0])
    runner = Runner.from_cfg(cfg)
    runner.train()
    batch = next(iter(runner.train_dataloader))
    assert batch['inputs'][0].shape[0] == 3   # gray/RGBA read as 3 channels
    metrics = runner.val_loop.run()
    assert set(metrics) >= {'mIoU', 'mAcc', 'aAcc'}
    # every val image was predicted at its label's full resolution
    runner.model.eval()
    for batch in runner.val_dataloader:
        with torch.no_grad():
            for sample in runner.model.test_step(batch):
                assert sample.pred_sem_seg.data.shape[-2:] == \
                    sample.gt_sem_seg.data.shape[-2:] == size


def test_syncbn_on_cpu_falls_back_to_bn(monkeypatch):
    raw = Config.fromfile(osp.join(CONFIG_DIR, 'pspnet_repvgg_b2.py'))
    assert raw.model.backbone.norm_cfg.type == 'SyncBN'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = load_cfg(osp.join(CONFIG_DIR, 'pspnet_repvgg_b2.py'))
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
