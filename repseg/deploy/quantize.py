# Copyright (c) repseg contributors. All rights reserved.
"""INT8 deployment of a fused segmentor, whatever the runtime: calibration
inputs from TRAIN-split images (seeded; a held-out part of the train split
is the control set of accuracy control), evaluation of runtime models with
mmseg's IoUMetric on the config's test set (mmseg's own whole /
sliding-window inference, with the runtime doing each forward), and the
side-by-side report (:func:`repseg.apis.quantize` puts them together with
the export, each runtime's quantizer (:mod:`repseg.deploy.runtimes`) and
the timing).

``torch.ao.quantization`` is deprecated in torch 2.13; the runtimes'
own quantizers (``onnxruntime.quantization``, NNCF) do the work.
"""
import copy
import random
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ..errors import UsageError
from ..ops.cpu import seen_isa
from .equalize import equalization_lines
from .sensitivity import sensitivity_table


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


def saturation_note(isa: str, reduce_range: bool) -> str:
    """A note for INT8 models with 8-bit weights run on a CPU whose label
    (:func:`repseg.ops.cpu.cpu_vector_isa`, as this process sees it) has no
    VNNI, or '' when there is nothing to say."""
    if reduce_range or 'VNNI' in seen_isa(isa):
        return ''
    return (f'note: this CPU ({isa}) has no VNNI: ONNX Runtime adds U8S8 '
            'products in saturating int16 pairs here, so the INT8 accuracy '
            "below is this CPU's; reduce_range=True (tools/quantize.py "
            '--reduce-range, 7-bit weights) avoids the saturation')


_RUNTIME_LABELS = dict(pytorch='PyTorch', onnxruntime='ONNX Runtime',
                      openvino='OpenVINO')


def run_label(row: dict, result: dict) -> str:
    """'OpenVINO INT8 (NNCF, performance preset, accuracy control <= 0.2)'
    and the like for a row of a quantization run."""
    precision = 'INT8' if row['precision'] == 'int8' else row['precision']
    name = f"{_RUNTIME_LABELS.get(row['runtime'], row['runtime'])} " \
        f'{precision}'
    c = result['calibration']
    if row['runtime'] == 'pytorch':
        return name + ' (fused)'
    if row['precision'] != 'int8':
        return name
    if row['runtime'] == 'onnxruntime':
        extra = 'QDQ, per-channel' + (', 7-bit weights' if c.get(
            'reduce_range') else '') + f", {c.get('method', 'minmax')}"
    else:
        extra = f"NNCF, {c.get('preset', 'performance')} preset, " \
            f"{c.get('method', 'minmax')}"
        ac = result.get('accuracy_control')
        if ac:
            extra += f", accuracy control <= {ac['max_drop']:g} mIoU"
    return f'{name} ({extra})'


def markdown(result: dict) -> str:
    """The table of a quantization run: every runtime and precision side
    by side (accuracy, argmax agreement with PyTorch fp32, speed, what ran,
    which layers stayed in float), then calibration, control set and
    evaluation."""
    rows = result['runs']
    ref = rows[0]
    lines = [
        '| model | precision ran | mIoU | mAcc | aAcc | argmax agreement '
        'with PyTorch fp32 | seconds / image | speed-up vs PyTorch fp32 | '
        'convs / matmuls in float |', '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        m, floats = r['metrics'], r['float_layers']
        lines.append(
            f"| {run_label(r, result)} | {r['precision_ran']} | "
            f"{m['mIoU']:.2f} | {m['mAcc']:.2f} | {m['aAcc']:.2f} | "
            f"{100 * r['argmax_agreement']:.2f}% | {r['seconds']:.4f} | "
            f"{ref['seconds'] / r['seconds']:.2f}x | "
            + (f'{len(floats)}' if r['precision'] == 'int8' else '-') + ' |')
    c = result['calibration']
    lines += ['', f"Calibration: {c['images']} train images ({c['pipeline']} "
              f"pipeline, seed {c.get('seed', 0)}); evaluation: "
              f"{result['evaluation']['images']} test images; input "
              f"{result['input_size'][0]}x{result['input_size'][1]}; "
              f"{result['threads']} threads; CPU vector ISA "
              f"{result['cpu_isa']}."]
    ac = result.get('accuracy_control')
    if ac:
        lines.append(
            f"Accuracy control (OpenVINO, max drop {ac['max_drop']:g} mIoU) "
            f"on the control set, {ac['control_set']}: fp32 "
            f"{ac['control_fp32_miou']:.2f} -> INT8 "
            f"{ac['control_int8_miou']:.2f} (drop {ac['control_drop']:+.2f}"
            f"); on the evaluation set: {ac['evaluation_fp32_miou']:.2f} -> "
            f"{ac['evaluation_int8_miou']:.2f} (drop "
            f"{ac['evaluation_drop']:+.2f}); left in float: "
            + (', '.join(ac['float_layers']) or 'nothing') + '.')
    for r in rows:
        if r['precision'] == 'int8' and r['float_layers']:
            lines.append(f"{run_label(r, result)} keeps in float: "
                         + ', '.join(r['float_layers'][:12])
                         + (' ...' if len(r['float_layers']) > 12 else ''))
    if result.get('equalization'):
        lines += equalization_lines(result['equalization'])
    lines += [f'Note: {n}' for n in result.get('notes', [])]
    lines += sensitivity_table(result.get('sensitivity') or [])
    return '\n'.join(lines)


def save_per_class_png(result: dict, path: str) -> str:
    """Grouped bars of the per-class IoU change of every other run against
    PyTorch fp32."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = result['runs']
    ref = rows[0]['per_class_iou']
    others = rows[1:]
    fig, ax = plt.subplots(figsize=(max(10, len(ref) * 0.6), 4.5))
    width = 0.8 / max(len(others), 1)
    for k, r in enumerate(others):
        delta = [0.0 if a is None or b is None else b - a
                 for a, b in zip(ref, r['per_class_iou'])]
        ax.bar([i + (k - (len(others) - 1) / 2) * width
                for i in range(len(ref))], delta, width,
               label=f"{run_label(r, result)}: mIoU "
               f"{r['metrics']['mIoU']:.2f}")
    ax.axhline(0, color='k', linewidth=0.8)
    ax.set_xticks(range(len(ref)))
    ax.set_xticklabels(result['classes'], rotation=45, ha='right')
    ax.set_ylabel('IoU change vs PyTorch fp32 (points)')
    ax.set_title(f"Per-class IoU change (PyTorch fp32 mIoU "
                 f"{rows[0]['metrics']['mIoU']:.2f}; CPU "
                 f"{result['cpu_isa']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    'build_dataset', 'calibration_inputs', 'calibration_set',
    'check_calibration_count',
    'control_batches', 'split_train', 'miou', 'evaluate', 'markdown',
    'run_label', 'save_per_class_png', 'saturation_note'
]
