# Copyright (c) repseg contributors. All rights reserved.
"""Calibration data for INT8, whatever the runtime: inputs from
TRAIN-split images (seeded; the pipeline's random transforms included),
and a held-out part of the train split as the control set of accuracy
control (the test loop's batches of those images).

``torch.ao.quantization`` is deprecated in torch 2.13; the runtimes'
own quantizers (``onnxruntime.quantization``, NNCF) do the work
(:mod:`repseg.deploy.runtimes`).
"""
import copy
import random
from contextlib import contextmanager
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.utils import ProgressBar

from ..errors import UsageError


def build_dataset(loader_cfg, pipeline=None):
    """The dataset of a dataloader config (with another ``pipeline``)."""
    from mmseg.registry import DATASETS
    ds_cfg = copy.deepcopy(loader_cfg['dataset'])
    if pipeline is not None:
        ds_cfg['pipeline'] = copy.deepcopy(pipeline)
    return DATASETS.build(ds_cfg)


def _batch(sample: dict) -> dict:
    return dict(inputs=[sample['inputs']],
                data_samples=[sample['data_samples']])


@contextmanager
def _seeded(seed: int):
    """Seed the global generators the data pipeline's random transforms
    draw from (random, numpy, torch) and restore them afterwards."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _train_dataset_cfg(cfg: Config) -> dict:
    ds = cfg.train_dataloader['dataset']
    while 'dataset' in ds and 'data_prefix' not in ds:   # RepeatDataset
        ds = ds['dataset']
    return ds


def split_train(cfg: Config, held_out: Union[int, str]) -> tuple:
    """Indices of the train split for calibration and for the control set:
    the last ``held_out`` images (in the dataset's sorted order; 'auto': a
    quarter of the split, at most 50) are held out, calibration draws from
    the others."""
    n = len(build_dataset(dict(dataset=_train_dataset_cfg(cfg)), []))
    if held_out == 'auto':
        held_out = max(1, min(n // 4, 50))
    if held_out < 0 or held_out >= n:
        raise UsageError(
            f'the control set asks for {held_out} of the {n} train images; '
            f'hold out between 0 and {n - 1} (calibration needs the rest)')
    return list(range(n - held_out)), list(range(n - held_out, n))


def check_calibration_count(num: int, available: int,
                            held_out: int = 0) -> None:
    """Refuse a calibration count the train split cannot give (``available``
    images for calibration, ``held_out`` more in the control set)."""
    if not 1 <= num <= available:
        raise UsageError(
            f'calibration asks for {num} images but the train split of the '
            f'config holds {available} for it'
            + (f' ({held_out} more are the control set)' if held_out else '')
            + f': ask for 1 to {available} calibration images or add '
            'training images.')


def calibration_set(cfg: Config, model, num: int, size: Sequence[int],
                    seed: int = 0, pipeline: str = 'train',
                    pool: Optional[Sequence[int]] = None) -> tuple:
    """``num`` normalized (1, 3, H, W) inputs from the TRAIN split (never
    an image the evaluation uses) and the files they come from: through the
    config's train pipeline (``pipeline='train'``: its random scale, crop,
    flip and photometric distortion, as the model saw in training) or its
    test pipeline (``'test'``: preprocessed like the evaluation), then the
    model's data preprocessor; a random window of ``size`` where the image
    is larger, resized where it differs. ``pool``: the train indices to
    draw from (default all; :func:`split_train` keeps the control set out).
    The same ``seed`` gives the same inputs (the pipeline's random
    transforms included). Returns ``(inputs, files)``."""
    if pipeline not in ('train', 'test'):
        raise UsageError(f"calibration pipeline must be 'train' or 'test', "
                         f'got {pipeline!r}')
    dataset = build_dataset(dict(dataset=_train_dataset_cfg(cfg)),
                            cfg.train_dataloader.dataset.pipeline
                            if pipeline == 'train' else
                            cfg.test_dataloader.dataset.pipeline)
    pool = list(range(len(dataset))) if pool is None else list(pool)
    check_calibration_count(num, len(pool), len(dataset) - len(pool))
    rng = np.random.default_rng(seed)
    picks = [pool[int(i)] for i in rng.choice(len(pool), size=num,
                                              replace=False)]
    h, w = size
    out, files = [], []
    bar = ProgressBar(num)
    for k, i in enumerate(picks):
        with _seeded(seed * 100003 + k):
            sample = dataset[int(i)]
        files.append(sample['data_samples'].img_path)
        x = model.data_preprocessor(_batch(sample), False)['inputs'].float()
        if x.shape[-2] > h and x.shape[-1] > w:
            top = int(rng.integers(0, x.shape[-2] - h + 1))
            left = int(rng.integers(0, x.shape[-1] - w + 1))
            x = x[..., top:top + h, left:left + w]
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode='bilinear',
                              align_corners=False)
        out.append(x.numpy())
        bar.update()
    return out, files


def calibration_inputs(cfg: Config, model, num: int, size: Sequence[int],
                       seed: int = 0, pipeline: str = 'train'
                       ) -> List[np.ndarray]:
    """The inputs of :func:`calibration_set` (from the whole train
    split)."""
    return calibration_set(cfg, model, num, size, seed, pipeline)[0]


def control_batches(cfg: Config, indices: Sequence[int]) -> list:
    """The test loop's batches (test pipeline, ground truth included) of
    the train images ``indices``: the control set accuracy control
    validates on."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.test_dataloader)
    ds = copy.deepcopy(_train_dataset_cfg(cfg))
    ds['pipeline'] = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    ds['indices'] = list(indices)
    loader_cfg['dataset'] = ds
    loader_cfg['num_workers'] = 0
    loader_cfg['persistent_workers'] = False
    return list(Runner.build_dataloader(loader_cfg))


__all__ = [
    'build_dataset', 'calibration_inputs', 'calibration_set',
    'check_calibration_count', 'control_batches', 'split_train'
]
