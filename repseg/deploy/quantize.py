# Copyright (c) repseg contributors. All rights reserved.
"""INT8 deployment of a fused segmentor with ONNX Runtime: static
quantization (QDQ, per-channel weights) calibrated on TRAIN-split images,
evaluation of models with mmseg's IoUMetric on the config's test set
(mmseg's own whole / sliding-window inference, with ONNX Runtime doing each
forward), and the report of a run (:func:`repseg.apis.quantize` puts them
together with the export and the timing).

``torch.ao.quantization`` is deprecated in torch 2.13; this builds on
``onnxruntime.quantization`` only.
"""
import copy
import os
import os.path as osp
import random
from contextlib import contextmanager
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ..errors import UsageError
from ..ops.cpu import seen_isa
from .onnx import require

#: --calib-method choices -> onnxruntime's CalibrationMethod names
CALIBRATION_METHODS = dict(minmax='MinMax', entropy='Entropy',
                           percentile='Percentile')


def build_dataset(loader_cfg, pipeline=None):
    """The dataset of a dataloader config (with another ``pipeline``)."""
    from mmseg.registry import DATASETS
    ds_cfg = copy.deepcopy(loader_cfg['dataset'])
    if pipeline is not None:
        ds_cfg['pipeline'] = copy.deepcopy(pipeline)
    return DATASETS.build(ds_cfg)


def export_size(cfg: Config, model, sample: dict) -> tuple:
    """(H, W) of every forward the test loop runs: the sliding window of a
    'slide' config, else the size of a preprocessed test image."""
    test_cfg = cfg.model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        return tuple(int(s) for s in test_cfg['crop_size'])
    data = model.data_preprocessor(_batch(sample), False)
    return tuple(data['inputs'].shape[-2:])


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


def calibration_inputs(cfg: Config, model, num: int, size: Sequence[int],
                       seed: int = 0, pipeline: str = 'train'
                       ) -> List[np.ndarray]:
    """``num`` normalized (1, 3, H, W) inputs from the TRAIN split (never
    an image the evaluation uses): through the config's train pipeline
    (``pipeline='train'``: its random scale, crop, flip and photometric
    distortion, as the model saw in training) or its test pipeline
    (``'test'``: preprocessed like the evaluation), then the model's data
    preprocessor; a random window of ``size`` where the image is larger,
    resized where it differs. The same ``seed`` gives the same inputs (the
    pipeline's random transforms included)."""
    if pipeline not in ('train', 'test'):
        raise UsageError(f"calibration pipeline must be 'train' or 'test', "
                         f'got {pipeline!r}')
    dataset = build_dataset(cfg.train_dataloader, None if pipeline == 'train'
                            else cfg.test_dataloader.dataset.pipeline)
    if len(dataset) < num:
        raise UsageError(
            f'calibration asks for {num} images but the train split of the '
            f'config holds {len(dataset)}: ask for at most {len(dataset)} '
            'calibration images or add training images.')
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=num, replace=False)
    h, w = size
    out = []
    bar = ProgressBar(num)
    for k, i in enumerate(picks):
        with _seeded(seed * 100003 + k):
            sample = dataset[int(i)]
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
    return out


def quantize_onnx(fp32_path: str, int8_path: str,
                  inputs: List[np.ndarray], method: str = 'minmax',
                  reduce_range: bool = False) -> str:
    """Static INT8 quantization with ONNX Runtime: QDQ format, per-channel
    symmetric INT8 weights, UINT8 activations calibrated on ``inputs``.

    ``reduce_range`` quantizes the weights to 7 bits ([-64, 64]): on CPUs
    without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's U8S8 kernels
    add pairs of products in saturating int16 (255 * 127 * 2 > 32767), and
    7-bit weights keep every pair in range, at the cost of one bit of
    weight precision; VNNI kernels do not saturate either way."""
    require('onnxruntime')
    from onnxruntime.quantization import (CalibrationDataReader,
                                          CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    if method not in CALIBRATION_METHODS:
        raise UsageError(f'calibration method must be one of '
                         f'{sorted(CALIBRATION_METHODS)}, got {method!r}')

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {'image': x}

    prepared = int8_path + '.pre.onnx'
    quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
    try:
        quantize_static(
            prepared, int8_path, Reader(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, reduce_range=reduce_range,
            calibrate_method=getattr(CalibrationMethod,
                                     CALIBRATION_METHODS[method]))
    finally:
        if osp.exists(prepared):
            os.remove(prepared)
    return int8_path


def evaluate(models: Dict[str, torch.nn.Module], cfg: Config) -> dict:
    """mmseg's IoUMetric of each of ``models`` on the config's test set, in
    one pass over it (every image is read and preprocessed once): per name,
    the summary, per-class IoU and the predicted label maps."""
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(copy.deepcopy(cfg.test_dataloader))
    evaluators = {}
    for name in models:
        evaluators[name] = Evaluator(copy.deepcopy(cfg.test_evaluator))
        evaluators[name].dataset_meta = loader.dataset.metainfo
    preds = {name: [] for name in models}
    print_log(f"evaluating {', '.join(models)} on {len(loader.dataset)} "
              'images', logger='current')
    bar = ProgressBar(len(loader.dataset))
    with torch.no_grad():
        for batch in loader:
            for name, model in models.items():
                samples = model.test_step(batch)
                preds[name] += [s.pred_sem_seg.data.clone() for s in samples]
                evaluators[name].process(samples, batch)
            for _ in range(len(batch['inputs'])):
                bar.update()
    return {name: _summary(evaluators[name], len(loader.dataset),
                           preds[name]) for name in models}


def _summary(evaluator, size: int, preds: list) -> dict:
    results = evaluator.metrics[0].results
    inter = sum(r[0] for r in results).double()
    union = sum(r[1] for r in results).double()
    per_class = (100 * inter / union.clamp_min(1)).tolist()
    per_class = [v if u > 0 else None for v, u in zip(per_class, union)]
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


def _route_name(route: str) -> str:
    """'ConvSym kernels', 'QGEMM kernels' or 'QGEMM kernels (30 of 34;
    the rest ConvSym)' for a plan summary (repseg.deploy.int8_conv)."""
    if route in ('convsym', 'gemm'):
        return f"{dict(gemm='QGEMM', convsym='ConvSym')[route]} kernels"
    n, total = route.split()[-1].split('/')
    return f'QGEMM kernels ({n} of {total}; the rest ConvSym)'


def markdown(result: dict) -> str:
    """The table of a quantization run: accuracy of fp32 and INT8, their
    pixel agreement and speed side by side."""
    f, q, s = result['fp32'], result['int8'], result['seconds']
    weights = 'per-channel'
    if result['calibration'].get('reduce_range'):
        weights += ', 7-bit weights'
    lines = [
        '| model | mIoU | mAcc | aAcc | seconds / image | speed-up vs ORT '
        'fp32 |', '|---|---|---|---|---|---|',
        f"| PyTorch fp32 (fused, fastest conv) | - | - | - | "
        f"{s['pytorch_fp32']:.3f} | "
        f"{s['onnxruntime_fp32'] / s['pytorch_fp32']:.2f}x |",
        f"| ONNX Runtime fp32 | {f['mIoU']:.2f} | {f['mAcc']:.2f} | "
        f"{f['aAcc']:.2f} | {s['onnxruntime_fp32']:.3f} | 1.00x |",
        f"| ONNX Runtime INT8 (QDQ, {weights}) | {q['mIoU']:.2f} | "
        f"{q['mAcc']:.2f} | {q['aAcc']:.2f} | {s['onnxruntime_int8']:.3f} "
        f"| {s['onnxruntime_fp32'] / s['onnxruntime_int8']:.2f}x |"]
    routes = result.get('int8_conv', {})
    route = routes.get('route', 'convsym')
    if 'onnxruntime_int8_convsym' in s:
        lines.append(
            '| ONNX Runtime INT8, ConvSym kernels (the file as written; max '
            'abs diff to the row above '
            f"{routes['max_abs_diff_vs_convsym']:.2g}) | - | - | - | "
            f"{s['onnxruntime_int8_convsym']:.3f} | "
            f"{s['onnxruntime_fp32'] / s['onnxruntime_int8_convsym']:.2f}x |")
    lines += [
        '',
        f"INT8 - fp32: mIoU {q['mIoU'] - f['mIoU']:+.2f}; argmax pixel "
        f"agreement {100 * result['pixel_agreement']:.2f}%; calibration "
        f"{result['calibration']['images']} train images "
        f"({result['calibration']['method']}, "
        f"{result['calibration']['pipeline']} pipeline); input "
        f"{result['input_size'][0]}x{result['input_size'][1]}; "
        f"{result['threads']} threads; CPU vector ISA {result['cpu_isa']}; "
        f"INT8 convolutions on ONNX Runtime's {_route_name(route)}."
    ]
    return '\n'.join(lines)


def save_per_class_png(result: dict, path: str) -> str:
    """Bar chart of the per-class IoU change INT8 - fp32."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    delta = [0.0 if d is None else d
             for d in result['per_class_iou_change']]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(result['classes'], delta,
           color=['tab:red' if d < 0 else 'tab:green' for d in delta])
    ax.axhline(0, color='k', linewidth=0.8)
    ax.set_ylabel('IoU change, INT8 - fp32 (points)')
    ax.set_title(f"Per-class IoU change under INT8 (mIoU "
                 f"{result['fp32']['mIoU']:.2f} -> "
                 f"{result['int8']['mIoU']:.2f})")
    plt.setp(ax.get_xticklabels(), rotation=45, ha='right')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    'CALIBRATION_METHODS', 'build_dataset', 'calibration_inputs',
    'quantize_onnx', 'evaluate', 'markdown', 'save_per_class_png',
    'export_size', 'saturation_note'
]
