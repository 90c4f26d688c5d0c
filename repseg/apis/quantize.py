# Copyright (c) repseg contributors. All rights reserved.
"""INT8 deployment in one call (tools/quantize.py): the fused model
exported to ONNX, calibrated on train images and quantized by each runtime
asked for (:mod:`repseg.deploy.runtimes`: ONNX Runtime, OpenVINO + NNCF,
optionally with accuracy control on a held-out control set), every model
(PyTorch fp32, each runtime's fp32, bf16 where it has it, INT8) evaluated
on the test set in one pass and timed side by side
(:func:`repseg.benchmark.measure.time_interleaved`)."""
import copy
import dataclasses
import json
import os
import os.path as osp
import statistics
from typing import Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..benchmark.measure import contention_note, time_interleaved
from ..deploy.build import SegForward, build_fused, refuse_overwrite
from ..deploy.equalize import check_method, equalization_lines, equalize_
from ..deploy.onnx import export_model
from ..deploy.quantize import (calibration_set, check_calibration_count,
                               control_batches, evaluate, markdown, miou,
                               saturation_note, save_per_class_png,
                               split_train)
from ..deploy.record import config_input_size
from ..deploy.sensitivity import layer_sensitivity
from ..deploy.runtimes import ControlSet, QuantOptions, get_runtime
from ..errors import UsageError, opt
from ..ops.cpu import cpu_vector_isa
from ..ops.nnpack_conv import use_nnpack_convs

REFERENCE = 'pytorch_fp32'


def _time(fns: dict, x: torch.Tensor, repeat: int) -> tuple:
    """Median seconds per image of each callable, after one warm-up call
    each, in interleaved rounds, and a note when the timings cannot be
    trusted (:func:`repseg.benchmark.measure.contention_note`)."""
    with torch.no_grad():
        for fn in fns.values():
            fn(x)
        times = time_interleaved(fns, lambda fn: fn(x), repeat)
    return ({k: statistics.median(v) for k, v in times.items()},
            contention_note(times))


def _agreement(ref: list, preds: list) -> float:
    same = sum((a == b).sum().item() for a, b in zip(ref, preds))
    return same / max(sum(a.numel() for a in ref), 1)


def _with_forward(model, forward):
    """A shallow copy of the segmentor ``model`` whose ``encode_decode``
    is ``forward`` (a runtime model, not a module: the copy shares its
    submodules with ``model``): mmseg's test loop runs around it."""
    m = copy.copy(model)
    m.encode_decode = forward
    return m


def check_options(backends: Sequence[str],
                  max_drop: Optional[float] = None,
                  method: str = 'minmax') -> list:
    """The runtimes of ``backends`` (each once), or a UsageError for an
    option that does not fit them (checked before any data is read)."""
    runtimes = [get_runtime(b) for b in dict.fromkeys(backends)]
    if not runtimes:
        raise UsageError(f'name at least one {opt("backend", None)}')
    for r in runtimes:
        r.check_method(method)
    if max_drop is not None:
        if 'openvino' not in backends:
            raise UsageError(
                f'{opt("max_drop", max_drop)} is accuracy control, which '
                f'OpenVINO (NNCF) has and ONNX Runtime has not: add '
                f'{opt("backend", "openvino")}')
        if not 0 <= max_drop <= 100:
            raise UsageError(f'{opt("max_drop", max_drop)} is in mIoU '
                             'points: give a value from 0 to 100')
    return runtimes


def quantize(cfg: Config, checkpoint: str, out_dir: str,
             num_calib: int = 64, method: str = 'minmax',
             repeat: int = 3, force: bool = False,
             allow_unsafe: bool = False,
             calib_pipeline: str = 'train',
             reduce_range: bool = False,
             backends: Sequence[str] = ('onnxruntime', ),
             preset: str = 'performance',
             fast_bias_correction: bool = True,
             ignored_types: Sequence[str] = ('MatMul', ),
             max_drop: Optional[float] = None,
             control_images: Optional[int] = None,
             seed: int = 0,
             equalize: str = 'activation',
             sensitivity_images: int = 1) -> dict:
    """Fuse, export, calibrate, quantize with every runtime of ``backends``,
    evaluate and time (what tools/quantize.py runs).

    Calibration: ``num_calib`` train images (``calib_pipeline``, ``seed``),
    activation ranges by ``method`` (both runtimes; 'minmax' by default).
    ONNX Runtime reads ``reduce_range``; OpenVINO (NNCF) ``preset``,
    ``fast_bias_correction`` and ``ignored_types`` (see
    :class:`repseg.deploy.runtimes.QuantOptions`). ``max_drop`` (mIoU
    points): OpenVINO's accuracy control on a control set of
    ``control_images`` train images held out from calibration (default: a
    quarter of the train split, at most 50), never test images.

    ``equalize`` repairs the fused model before it is exported and
    quantized (:func:`repseg.deploy.equalize.equalize_`: 'activation',
    the default, 'cle' or 'off'; exact in float: the runtimes' fp32 rows
    show it). The report lists the conv layers whose INT8 quantization
    alone costs most, measured on ``sensitivity_images`` calibration
    inputs (0: no such list).

    Writes the models (``model_{fp32,int8}{.onnx,.xml}``),
    ``quantize.json``, ``quantize.md`` and ``per_class_iou.png`` into
    ``out_dir`` and returns what ``quantize.json`` holds.
    """
    runtimes = check_options(backends, max_drop, method)
    backends = [r.name for r in runtimes]
    check_method(equalize)
    if sensitivity_images < 0:
        raise UsageError(f'{opt("sensitivity_images", sensitivity_images)}'
                         ' counts images: give 0 (no sensitivity list) or '
                         'more')
    for r in runtimes:
        r.require()
    if osp.isfile(out_dir):
        raise UsageError(f'the output {out_dir!r} is a file; give a folder')
    files = {k: osp.join(out_dir, f) for k, f in (
        ('json', 'quantize.json'), ('md', 'quantize.md'),
        ('png', 'per_class_iou.png'))}
    written = list(files.values())
    for r in runtimes:
        for p in ('fp32', 'int8'):
            files[f'{r.name}_{p}'] = osp.join(out_dir,
                                              f'model_{p}{r.suffix}')
            written += r.files(files[f'{r.name}_{p}'])
    refuse_overwrite(written, force)

    model = build_fused(copy.deepcopy(cfg), checkpoint, allow_unsafe)
    # the control set is held out of the train split; counts are checked
    # before anything long runs
    pool, control_idx = split_train(
        cfg, control_images if control_images else
        ('auto' if max_drop is not None else 0))
    check_calibration_count(num_calib, len(pool), len(control_idx))
    os.makedirs(out_dir, exist_ok=True)
    size = config_input_size(cfg)
    print_log(f'calibrating on {num_calib} train images ({calib_pipeline} '
              f'pipeline, seed {seed})', logger='current')
    inputs, calib_files = calibration_set(cfg, model, num_calib, size, seed,
                                          calib_pipeline, pool)
    deployed = copy.deepcopy(model) if equalize != 'off' else model
    equalization = equalize_(deployed, inputs, equalize)
    print_log(' '.join(equalization_lines(equalization)), logger='current')
    onnx_fp32 = files.get('onnxruntime_fp32',
                          osp.join(out_dir, '.model_fp32.onnx'))
    export_model(cfg, None, onnx_fp32, size, force=True, verify=False,
                 model=deployed)
    sensitivity = []
    if sensitivity_images:
        print_log(f'per-layer INT8 sensitivity on {sensitivity_images} '
                  'calibration input(s)', logger='current')
        sensitivity = layer_sensitivity(deployed,
                                        inputs[:sensitivity_images])
    control = None
    if control_idx:
        batches = control_batches(cfg, control_idx)
        control = ControlSet(
            items=batches, name=f'{len(control_idx)} train images held out '
            'of calibration (test pipeline)',
            metric=lambda fwd, items: miou(_with_forward(model, fwd), cfg,
                                           items))
    options = QuantOptions(method=method, reduce_range=reduce_range,
                           preset=preset,
                           fast_bias_correction=fast_bias_correction,
                           ignored_types=tuple(ignored_types))
    on_nnpack = use_nnpack_convs(model, 'auto')
    runs = {REFERENCE: dict(runtime='pytorch', precision='fp32',
                            segmentor=on_nnpack,
                            forward=SegForward(on_nnpack),
                            info=dict(precision='fp32', float_layers=[]))}
    bf16_note = ''
    for r in runtimes:
        fp32 = r.from_onnx(onnx_fp32, files[f'{r.name}_fp32'])
        o = dataclasses.replace(options, max_drop=max_drop
                                if r.name == 'openvino' else None)
        print_log(f'quantizing with {r.label}', logger='current')
        r.quantize(fp32, files[f'{r.name}_int8'], inputs, o, control)
        if r.name == 'openvino' and 'bf16' not in r.precisions():
            bf16_note = f"no OpenVINO bf16 row: {r.missing('bf16')}"
        for p in r.precisions():
            path = files[f"{r.name}_{'int8' if p == 'int8' else 'fp32'}"]
            loaded = r.load(path, p)
            runs[f'{r.name}_{p}'] = dict(runtime=r.name, precision=p,
                                         forward=loaded, info=loaded.info)
    if 'onnxruntime' not in backends:
        os.remove(onnx_fp32)   # the intermediate file of the IR
    isa = cpu_vector_isa()
    note = saturation_note(isa, reduce_range) if 'onnxruntime' in \
        backends else ''
    if note:
        print_log(note, logger='current')
    seg = {k: v.get('segmentor') or _with_forward(model, v['forward'])
           for k, v in runs.items()}
    evals = evaluate(seg, cfg)
    x = torch.from_numpy(inputs[0])
    speed, timing_note = _time({k: v['forward'] for k, v in runs.items()},
                               x, repeat)
    if timing_note:
        print_log(f'note: {timing_note}', logger='current')
    ref = evals[REFERENCE]
    rows = []
    for k, v in runs.items():
        e = evals[k]
        rows.append(dict(
            name=k, runtime=v['runtime'], precision=v['precision'],
            precision_ran=v['info']['precision'],
            kernels=v['info'].get('kernels', ''),
            threads=v['info'].get('threads', torch.get_num_threads()),
            file=v['info'].get('file'), metrics=e['metrics'],
            per_class_iou=e['per_class_iou'],
            argmax_agreement=_agreement(ref['preds'], e['preds']),
            seconds=speed[k], float_layers=v['info']['float_layers']))
    accuracy_control = None
    if control is not None:
        ov = {p: _with_forward(model, runs[f'openvino_{p}']['forward'])
              for p in ('fp32', 'int8')}
        on_control = evaluate(ov, cfg, control.items, quiet=True)
        c_fp32 = on_control['fp32']['metrics']['mIoU']
        c_int8 = on_control['int8']['metrics']['mIoU']
        e_fp32 = evals['openvino_fp32']['metrics']['mIoU']
        e_int8 = evals['openvino_int8']['metrics']['mIoU']
        accuracy_control = dict(
            max_drop=max_drop, runtime='openvino', control_set=control.name,
            control_files=[b['data_samples'][0].img_path
                           for b in control.items],
            control_fp32_miou=c_fp32, control_int8_miou=c_int8,
            control_drop=c_fp32 - c_int8,
            evaluation_fp32_miou=e_fp32, evaluation_int8_miou=e_int8,
            evaluation_drop=e_fp32 - e_int8,
            float_layers=runs['openvino_int8']['info']['float_layers'])
    result = dict(
        config=cfg.filename, checkpoint=checkpoint, input_size=list(size),
        backends=backends,
        calibration=dict(images=num_calib, method=method, split='train',
                         pipeline=calib_pipeline, seed=seed,
                         reduce_range=reduce_range, preset=preset,
                         fast_bias_correction=fast_bias_correction,
                         ignored_types=list(ignored_types),
                         files=calib_files),
        equalization=equalization, sensitivity=sensitivity,
        evaluation=dict(split='test', images=len(ref['preds']),
                        reference=REFERENCE),
        accuracy_control=accuracy_control,
        classes=ref['classes'], runs=rows,
        notes=[n for n in (note, bf16_note, timing_note) if n],
        cpu_isa=isa, threads=torch.get_num_threads(),
        files={k: v for k, v in files.items() if osp.exists(v)
               or k in ('json', 'md', 'png')})
    with open(files['json'], 'w') as f:
        json.dump(result, f, indent=2)
    with open(files['md'], 'w') as f:
        f.write(markdown(result) + '\n')
    save_per_class_png(result, files['png'])
    return result


__all__ = ['quantize', 'check_options']
