# Copyright (c) repseg contributors. All rights reserved.
"""Evaluation of any segmentor-like model (a PyTorch segmentor, or one
whose ``encode_decode`` a runtime runs: :func:`repseg.deploy.forward.
with_forward`) with mmseg's IoUMetric on the config's test set, mmseg's own
whole / sliding-window inference around it; several models in one pass
over the data."""
import copy
from typing import Dict, Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import ProgressBar


def miou(model, cfg: Config, batches: list) -> float:
    """mIoU (0-100, mmseg's IoUMetric of the config's evaluator) of the
    segmentor ``model`` on ``batches``."""
    return evaluate({'m': model}, cfg, batches, quiet=True)['m'][
        'metrics']['mIoU']


def evaluate(models: Dict[str, torch.nn.Module], cfg: Config,
             batches: Optional[list] = None, quiet: bool = False) -> dict:
    """mmseg's IoUMetric of each of ``models`` on the config's test set (or
    on ``batches`` of the test loop), in one pass over it (every image is
    read and preprocessed once): per name, the summary, per-class IoU and
    the predicted label maps."""
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner
    from mmseg.registry import DATASETS
    if batches is None:
        loader = Runner.build_dataloader(copy.deepcopy(cfg.test_dataloader))
        meta, size = loader.dataset.metainfo, len(loader.dataset)
    else:
        loader, size = batches, sum(len(b['inputs']) for b in batches)
        meta = DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO
    evaluators = {}
    for name in models:
        evaluators[name] = Evaluator(copy.deepcopy(cfg.test_evaluator))
        evaluators[name].dataset_meta = meta
    preds = {name: [] for name in models}
    if not quiet:
        print_log(f"evaluating {', '.join(models)} on {size} images",
                  logger='current')
    bar = None if quiet else ProgressBar(size)
    with torch.no_grad():
        for batch in loader:
            for name, model in models.items():
                samples = model.test_step(batch)
                preds[name] += [s.pred_sem_seg.data.clone() for s in samples]
                evaluators[name].process(samples, batch)
            for _ in range(len(batch['inputs']) if bar else 0):
                bar.update()
    return {name: _summary(evaluators[name], size, preds[name], quiet)
            for name in models}


def _summary(evaluator, size: int, preds: list, quiet: bool = False
             ) -> dict:
    results = evaluator.metrics[0].results
    inter = sum(r[0] for r in results).double()
    union = sum(r[1] for r in results).double()
    per_class = (100 * inter / union.clamp_min(1)).tolist()
    per_class = [v if u > 0 else None for v, u in zip(per_class, union)]
    if quiet:   # IoUMetric prints its per-class table to the logger
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel('WARNING')
        try:
            summary = evaluator.evaluate(size)
        finally:
            logger.setLevel(level)
    else:
        summary = evaluator.evaluate(size)
    return dict(metrics={k: float(v) for k, v in summary.items()},
                per_class_iou=per_class, preds=preds,
                classes=list(evaluator.dataset_meta['classes']))


def agreement(ref: list, preds: list) -> float:
    """The share of pixels whose labels in ``preds`` equal ``ref``'s (lists
    of label maps, as :func:`evaluate` returns them)."""
    same = sum((a == b).sum().item() for a, b in zip(ref, preds))
    return same / max(sum(a.numel() for a in ref), 1)


__all__ = ['evaluate', 'miou', 'agreement']
