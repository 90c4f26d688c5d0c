# Copyright (c) repseg contributors. All rights reserved.
"""The main job on the embedded default: train a small PSPNet-RepVGG on a
generated Cityscapes-layout dataset, evaluate the FUSED model, and write
prediction overlays."""
import os
import os.path as osp
import time
from typing import Optional

import mmcv
import torch
from mmengine.logging import print_log

from ..datasets import CLASSES, check_cityscapes, generate_synthetic_cityscapes
from ..reparam import reparameterize_model
from ..visualization import annotate_overlay
from ..engine.config import load_cfg
from .training import train

DEFAULT_CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'pspnet_repvgg_a0_synthetic.py')


def ensure_synthetic_dataset(data_root: str, **kwargs) -> dict:
    """Generate the synthetic dataset unless ``data_root`` already holds a
    valid one (an existing folder is checked, never overwritten)."""
    if not osp.isdir(data_root) or not os.listdir(data_root):
        print_log(f'Generating the synthetic Cityscapes-layout dataset in '
                  f'{data_root} ...', logger='current')
        generate_synthetic_cityscapes(data_root, **kwargs)
    return check_cityscapes(data_root)


def write_overlays(model, runner, out_dir: str, num: int = 4) -> list:
    """Predict ``num`` val images with ``model`` and write image / ground
    truth / prediction overlays as PNG files (mmseg's SegLocalVisualizer)."""
    os.makedirs(out_dir, exist_ok=True)
    visualizer = runner.visualizer
    visualizer.dataset_meta = runner.val_dataloader.dataset.metainfo
    files = []
    model.eval()
    for batch in runner.val_dataloader:
        with torch.no_grad():
            samples = model.test_step(batch)
        for sample in samples:
            img = mmcv.imread(sample.img_path, channel_order='rgb')
            name = osp.basename(sample.img_path).replace(
                '_leftImg8bit.png', '')
            out_file = osp.join(out_dir, f'{name}_overlay.png')
            visualizer.add_datasample(
                name, img, sample, draw_gt=True, draw_pred=True, show=False,
                wait_time=0, out_file=out_file, with_labels=False)
            meta = visualizer.dataset_meta
            annotate_overlay(out_file, meta['classes'], meta['palette'])
            files.append(out_file)
            if len(files) >= num:
                return files
    return files


def run_demo(data_root: str = 'data/synthetic_cityscapes',
             work_dir: Optional[str] = None,
             config: str = DEFAULT_CONFIG,
             max_iters: Optional[int] = None,
             num_overlays: int = 4,
             cfg_options: Optional[dict] = None,
             resume: bool = False) -> dict:
    """Train, evaluate the fused model, write overlays; returns a summary
    dict (mIoU etc. of the fused model, files, seconds)."""
    start = time.time()
    counts = ensure_synthetic_dataset(data_root)
    if work_dir is None:
        work_dir = osp.join('work_dirs', 'demo',
                            time.strftime('%Y%m%d_%H%M%S'))
    options = {
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
    }
    if max_iters is not None:
        options.update({
            'train_cfg.max_iters': max_iters,
            'train_cfg.val_interval': max_iters,
            'param_scheduler.0.end': max_iters,
        })
    options.update(cfg_options or {})
    cfg = load_cfg(config, work_dir=work_dir, cfg_options=options,
                   resume=resume)
    runner = train(cfg)
    metrics = {
        k: runner.message_hub.get_scalar(f'val/{k}').current()
        for k in ('mIoU', 'mAcc', 'aAcc')
        if f'val/{k}' in runner.message_hub.log_scalars
    }
    fused = reparameterize_model(runner.model)
    overlays = write_overlays(fused, runner, osp.join(work_dir, 'overlays'),
                              num_overlays)
    summary = dict(
        metrics=metrics,
        chance_miou=100.0 / len(CLASSES),
        dataset=counts,
        work_dir=work_dir,
        overlays=overlays,
        seconds=time.time() - start)
    return summary
