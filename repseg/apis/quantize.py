# Copyright (c) repseg contributors. All rights reserved.
"""INT8 deployment in one call (tools/quantize.py): the fused model
exported to ONNX, calibrated on train images and quantized
(:mod:`repseg.deploy.quantize`), fp32 and INT8 evaluated on the test set,
and PyTorch fp32 / ONNX Runtime fp32 / INT8 timed side by side
(:func:`repseg.benchmark.measure.time_interleaved`)."""
import copy
import json
import os
import os.path as osp
import statistics

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..benchmark.measure import time_interleaved
from ..deploy.build import SegForward, build_fused, refuse_overwrite
from ..deploy.onnx import (OrtEncodeDecode, export_onnx, int8_sessions,
                           ort_session, require)
from ..deploy.quantize import (build_dataset, calibration_inputs, evaluate,
                               export_size, markdown, quantize_onnx,
                               saturation_note, save_per_class_png)
from ..ops.cpu import cpu_vector_isa
from ..ops.fast_conv import use_fast_convs


def _time(model, sessions: dict, x: torch.Tensor, repeat: int) -> dict:
    """Median seconds per image of PyTorch fp32 (fused, fastest conv
    backend) and of each ONNX Runtime session (fp32, INT8, ...), after one
    warm-up call each."""
    fns = {'pytorch_fp32': SegForward(use_fast_convs(model, 'auto'))}
    fns.update({f'onnxruntime_{k}': OrtEncodeDecode(v)
                for k, v in sessions.items()})
    with torch.no_grad():
        for fn in fns.values():
            fn(x)
        times = time_interleaved(fns, lambda fn: fn(x), repeat)
    return {k: statistics.median(v) for k, v in times.items()}


def _sessions(files: dict, x: torch.Tensor) -> tuple:
    """ONNX Runtime sessions of the fp32 and the INT8 model
    (:func:`repseg.deploy.onnx.int8_sessions`: each conv on the kernels
    measured faster for it here, and the file as written next to it where
    any moved); with the route, the probe timings and the max |diff| of
    the INT8 routes' outputs on ``x``."""
    sessions, plan, diff = int8_sessions(files['int8'], x)
    if diff is not None:
        print_log("the ConvSym kernels of the file as written are timed "
                  'next to them', logger='current')
    return dict(fp32=ort_session(files['fp32']), **sessions), dict(
        route=plan.summary, probe_seconds=plan.seconds,
        max_abs_diff_vs_convsym=diff or 0.0)


def _compare(fp32: dict, int8: dict) -> dict:
    same = sum((a == b).sum().item() for a, b in zip(fp32['preds'],
                                                      int8['preds']))
    total = sum(a.numel() for a in fp32['preds'])
    delta = [None if a is None or b is None else b - a
             for a, b in zip(fp32['per_class_iou'], int8['per_class_iou'])]
    return dict(pixel_agreement=same / max(total, 1),
                per_class_iou_change=delta)


def quantize(cfg: Config, checkpoint: str, out_dir: str,
             num_calib: int = 64, method: str = 'minmax',
             repeat: int = 3, force: bool = False,
             allow_unsafe: bool = False,
             calib_pipeline: str = 'train',
             reduce_range: bool = False) -> dict:
    """Fuse, export, calibrate, quantize, evaluate and time (what
    tools/quantize.py runs; ``reduce_range``: 7-bit weights, see
    :func:`repseg.deploy.quantize.quantize_onnx`); writes
    ``model_fp32.onnx``, ``model_int8.onnx``, ``quantize.json``,
    ``quantize.md`` and ``per_class_iou.png`` into
    ``out_dir`` and returns what ``quantize.json`` holds."""
    require('onnxruntime')
    files = {k: osp.join(out_dir, f) for k, f in (
        ('fp32', 'model_fp32.onnx'), ('int8', 'model_int8.onnx'),
        ('json', 'quantize.json'), ('md', 'quantize.md'),
        ('png', 'per_class_iou.png'))}
    refuse_overwrite(files.values(), force)
    os.makedirs(out_dir, exist_ok=True)
    model = build_fused(copy.deepcopy(cfg), checkpoint, allow_unsafe)
    first = build_dataset(cfg.test_dataloader)[0]
    size = export_size(cfg, model, first)
    export_onnx(cfg, None, files['fp32'], size, force=True, verify=False,
                model=model)
    print_log(f'calibrating on {num_calib} train images ({method}, '
              f'{calib_pipeline} pipeline)', logger='current')
    inputs = calibration_inputs(cfg, model, num_calib, size,
                                pipeline=calib_pipeline)
    quantize_onnx(files['fp32'], files['int8'], inputs, method,
                  reduce_range)
    sessions, int8_conv = _sessions(files, torch.from_numpy(inputs[0]))
    ort_models = {}
    for k in ('fp32', 'int8'):
        ort_models[k] = copy.copy(model)
        ort_models[k].encode_decode = OrtEncodeDecode(sessions[k])
    isa = cpu_vector_isa()
    note = saturation_note(isa, reduce_range)
    if note:
        print_log(note, logger='current')
    evals = evaluate(ort_models, cfg)
    speed = _time(model, sessions, torch.from_numpy(inputs[0]), repeat)
    result = dict(
        config=cfg.filename, checkpoint=checkpoint, input_size=list(size),
        calibration=dict(images=num_calib, method=method, split='train',
                         pipeline=calib_pipeline, reduce_range=reduce_range),
        fp32=evals['fp32']['metrics'], int8=evals['int8']['metrics'],
        classes=evals['fp32']['classes'],
        fp32_per_class_iou=evals['fp32']['per_class_iou'],
        int8_per_class_iou=evals['int8']['per_class_iou'],
        **_compare(evals['fp32'], evals['int8']),
        seconds=speed, cpu_isa=isa,
        int8_conv=int8_conv,
        threads=torch.get_num_threads(), files=files)
    with open(files['json'], 'w') as f:
        json.dump(result, f, indent=2)
    with open(files['md'], 'w') as f:
        f.write(markdown(result) + '\n')
    save_per_class_png(result, files['png'])
    return result


__all__ = ['quantize']
