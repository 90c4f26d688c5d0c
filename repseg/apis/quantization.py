# Copyright (c) repseg contributors. All rights reserved.
"""INT8 deployment in one call (tools/quantize.py), in four stages:

1. prepare: the fused model, calibration inputs from train images and
   the control set of accuracy control;
2. quantize: the INT8 pipeline the benchmark runs too
   (:func:`repseg.quant.pipeline.make_int8_models`: the repair, the ONNX
   export, and every runtime's fp32 (bf16 where it has it) and INT8 models
   made and loaded; the fp32 export is kept where a runtime's fp32 file is
   it), then the per-layer sensitivity;
3. evaluate: every model (PyTorch fp32 and each runtime's) on the test set
   in one pass, and timed side by side
   (:func:`repseg.ops.timing.time_interleaved`);
4. report: ``quantize.json``, ``quantize.md`` and ``per_class_iou.png``.

With ``qat`` (iterations), stage 2 is followed by quantization-aware
fine-tuning of the equalized model and each runtime's QAT file
(:func:`repseg.quant.pipeline.make_qat_models`), kept where its argmax
agreement with fp32 on the control set is not below the post-training
file's; the report has its rows beside the post-training ones.
"""
import copy
import dataclasses
import json
import os
import os.path as osp
import statistics
from typing import Callable, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..deploy.build import (SegForward, build_fused, check_input_size,
                            refuse_overwrite)
from ..deploy.evaluate import agreement, evaluate, miou
from ..deploy.forward import TorchForward, with_forward
from ..deploy.onnx import ExportSettings, dynamic_by_default, export_model
from ..deploy.record import (checkpoint_block_type, config_input_size,
                             qat_record, record_of)
from ..deploy.runs import RuntimeRun
from ..deploy.runtimes import (DEFAULT_CALIB_METHOD, DEFAULT_RUNTIME,
                               ControlSet, QuantOptions, Runtime,
                               options_for, runtime_setting_values,
                               runtime_settings, select_runtimes)
from ..errors import UsageError, opt
from ..ops.cpu import cpu_vector_isa
from ..ops.nnpack_conv import use_nnpack_convs
from ..ops.timing import contention_note, time_interleaved
from ..quant.calibration import (calibration_set, check_calibration_count,
                                 control_batches, split_train)
from ..quant.equalize import check_equalize, equalization_lines
from ..quant.pipeline import (QAT_PRECISION, Int8Job, make_int8_models,
                              make_qat_models)
from ..quant.qat import (DEFAULT_LR, QatJob, check_qat_job,
                         check_qat_options, export_qat)
from ..quant.report import PYTORCH, markdown, save_per_class_png
from ..quant.sensitivity import layer_sensitivity
from ..settings import Settings
from .checks import check_data

REFERENCE = 'pytorch_fp32'


@dataclasses.dataclass
class QuantizeSettings(QuantOptions, Settings):
    """How to quantize (one field per option of tools/quantize.py).

    Args:
        backends (sequence of str): the runtimes to quantize for, side by
            side (:func:`repseg.deploy.runtimes.runtime_names`).
        input_size (sequence of int or None): (H, W), or one side, of the
            INT8 files (with ``dynamic_shape``: of the calibration inputs);
            default: the size the config's test loop runs.
        dynamic_shape (bool or None): the files take any H and W (the
            export's ``dynamic_shape``); calibration still runs at
            ``input_size``. None (default): dynamic for a whole-image
            config, fixed for a sliding-window one
            (:func:`repseg.deploy.onnx.dynamic_by_default`).
        calib_images (int): train images to calibrate on.
        calib_pipeline (str): 'train' (the config's train pipeline: its
            random transforms, as the model saw in training) or 'test'.
        seed (int): the seed of the calibration images and transforms.
        calib_method, max_drop, runtime_options: the runtimes' settings,
            inherited from :class:`~repseg.deploy.runtimes.QuantOptions`
            (``runtime_options``: each runtime's own settings by name,
            e.g. ``dict(preset='mixed')``; :meth:`of` also takes them
            flat, as the tools' flags give them); accuracy control
            (``max_drop``, mIoU points) runs on a control set of
            ``control_images`` train images held out from calibration
            (default: a quarter of the train split, at most 50), never
            test images.
        equalize (str): the exact repair of the fused model before export
            ('activation', the default, 'cle' or 'off').
        sensitivity_images (int): calibration inputs on which the report
            measures each conv's INT8 error alone (0: no list).
        qat (int): iterations of quantization-aware fine-tuning after the
            post-training step (0, the default: none); each runtime's
            QAT file (``model_int8_qat``) is written where its argmax
            agreement with fp32 on the control set (held out whenever
            ``qat`` is set) is not below the post-training file's.
        qat_lr (float): its learning rate
            (:data:`repseg.quant.qat.DEFAULT_LR`, chosen by measurement).
        qat_targets (str): what its loss pulls the INT8 model to: 'fp32'
            (the default: the fp32 model's labels of each training crop)
            or 'labels' (the ground truth; see
            :class:`repseg.quant.qat.QatJob`).
        repeat (int): interleaved timing rounds.
        force (bool): overwrite the files of an earlier run.
        allow_unsafe (bool): full unpickling of the checkpoint.
    """
    backends: Sequence[str] = (DEFAULT_RUNTIME, )
    input_size: Optional[Sequence[int]] = None
    dynamic_shape: Optional[bool] = None
    calib_images: int = 64
    calib_pipeline: str = 'train'
    seed: int = 0
    control_images: Optional[int] = None
    equalize: str = 'activation'
    sensitivity_images: int = 1
    qat: int = 0
    qat_lr: float = DEFAULT_LR
    qat_targets: str = 'fp32'
    repeat: int = 3
    force: bool = False
    allow_unsafe: bool = False

    @classmethod
    def of(cls, options: dict, **overrides) -> 'QuantizeSettings':
        """Settings from a mapping that may hold other keys too (a tool's
        ``vars(args)``), the runtimes' own settings flat in it (as the
        tools' flags give them) or in ``runtime_options``; ``overrides``
        win."""
        own = {k: v for k, v in options.items() if k in runtime_settings()}
        own.update(options.get('runtime_options') or {})
        return super().of(options, **{'runtime_options': own, **overrides})

    @property
    def quant_options(self) -> QuantOptions:
        """The runtimes' part of the settings."""
        return QuantOptions(calib_method=self.calib_method,
                            max_drop=self.max_drop,
                            runtime_options=dict(self.runtime_options))

    def check(self) -> List[Runtime]:
        """Every option checked once, before any data is read; returns the
        runtimes (each once, their packages importable)."""
        runtimes = select_runtimes(self.backends, self.quant_options)
        check_equalize(self.equalize)
        if self.calib_pipeline not in ('train', 'test'):
            raise UsageError(f"{opt('calib_pipeline', self.calib_pipeline)}"
                             " is not a pipeline: give 'train' or 'test'")
        if self.sensitivity_images < 0:
            raise UsageError(
                f'{opt("sensitivity_images", self.sensitivity_images)} '
                'counts images: give 0 (no sensitivity list) or more')
        if self.qat < 0:
            raise UsageError(f'{opt("qat", self.qat)} counts iterations: '
                             'give 0 (no quantization-aware fine-tuning) '
                             'or more')
        check_qat_options(self.qat_targets, self.qat_lr)
        for r in runtimes:
            r.require()
        return runtimes


def check_options(backends: Sequence[str], max_drop: Optional[float] = None,
                  method: str = DEFAULT_CALIB_METHOD) -> list:
    """The runtimes of ``backends``, or a UsageError for an option that
    does not fit them (deprecated: :meth:`QuantizeSettings.check`)."""
    return QuantizeSettings(backends=tuple(backends), max_drop=max_drop,
                            calib_method=method).check()


@dataclasses.dataclass
class _Prepared:
    """What the prepare stage hands on."""
    model: torch.nn.Module           # the fused segmentor (reference)
    size: tuple                      # the INT8 files' input size
    test_size: tuple                 # what the test loop runs
    inputs: list                     # calibration inputs (numpy)
    calib_files: list
    equalization: dict
    sensitivity: list
    control: Optional[ControlSet]
    dynamic: bool = False            # the files take any input size
    export: str = ''                 # the fp32 ONNX export
    deployed: Optional[torch.nn.Module] = None   # the equalized model
    pool: Optional[list] = None      # train images outside the control set


def _files(out_dir: str, runtimes: Sequence[Runtime],
           qat: bool = False) -> dict:
    files = {k: osp.join(out_dir, f) for k, f in (
        ('json', 'quantize.json'), ('md', 'quantize.md'),
        ('png', 'per_class_iou.png'), ('int8_json', 'model_int8.json'))}
    for r in runtimes:
        for p in ('fp32', 'int8') + ((QAT_PRECISION, ) if qat else ()):
            files[f'{r.name}_{p}'] = osp.join(out_dir,
                                              f'model_{p}{r.suffix}')
    return files


def _prepare(cfg: Config, checkpoint: str, out_dir: str,
             runtimes: Sequence[Runtime], s: QuantizeSettings,
             log: Callable[[str], None]) -> tuple:
    """The fused model, calibration inputs and control set, then the INT8
    pipeline (repair, export, every runtime's models:
    :func:`repseg.quant.pipeline.make_int8_models`) and the per-layer
    sensitivity; returns the :class:`_Prepared` stage and the runs."""
    model = build_fused(copy.deepcopy(cfg), checkpoint, s.allow_unsafe)
    # the control set is held out of the train split; counts are checked
    # before anything long runs
    pool, control_idx = split_train(
        cfg, s.control_images if s.control_images else
        ('auto' if s.max_drop is not None or s.qat else 0))
    check_calibration_count(s.calib_images, len(pool), len(control_idx))
    os.makedirs(out_dir, exist_ok=True)
    test_size = config_input_size(cfg)
    size = check_input_size(s.input_size) if s.input_size is not None else \
        test_size
    log(f'calibrating on {s.calib_images} train images '
        f'({s.calib_pipeline} pipeline, seed {s.seed})')
    inputs, calib_files = calibration_set(cfg, model, s.calib_images, size,
                                          s.seed, s.calib_pipeline, pool)
    control = _control_set(cfg, model, control_idx)

    dynamic = dynamic_by_default(cfg, s.dynamic_shape)

    def export(segmentor, path):
        export_model(cfg, None, path, ExportSettings(
            input_size=size, dynamic_shape=dynamic, force=True,
            verify=False), model=segmentor)

    made = make_int8_models(model, export, out_dir, Int8Job(
        runtimes, inputs, options=s.quant_options, control=control,
        equalize=s.equalize, pattern='model_{precision}'), log)
    log(' '.join(equalization_lines(made.equalization)))
    sensitivity = []
    if s.sensitivity_images:
        log(f'per-layer INT8 sensitivity on {s.sensitivity_images} '
            'calibration input(s)')
        sensitivity = layer_sensitivity(made.segmentor,
                                        inputs[:s.sensitivity_images])
    return _Prepared(model, size, tuple(test_size), inputs, calib_files,
                     made.equalization, sensitivity, control,
                     dynamic, made.export, made.segmentor, pool), made.runs


def _control_set(cfg: Config, model, control_idx: list
                 ) -> Optional[ControlSet]:
    """The held-out train images of accuracy control, scored by the mIoU
    of the fused model with a runtime's forward (None: no control set; a
    file of one size runs each image resized to it: TorchForward)."""
    if not control_idx:
        return None
    return ControlSet(
        items=control_batches(cfg, control_idx),
        name=f'{len(control_idx)} train images held out of calibration '
        '(test pipeline)',
        metric=lambda m, items: miou(with_forward(model, TorchForward(m)),
                                     cfg, items))


def _finish_runs(out_dir: str, runs: List[RuntimeRun], p: _Prepared,
                 s: QuantizeSettings, log: Callable[[str], None]) -> None:
    """The runs evaluated at the test loop's size where the files have
    another, the INT8 files' description, the export removed where no
    runtime's file is it."""
    if p.dynamic:
        log(f'note: the files take inputs of any size (dynamic H/W; '
            f'calibrated at {p.size[0]}x{p.size[1]}): every row runs each '
            'test input at its own size')
    elif tuple(p.size) != p.test_size:
        log(f'note: the files take {p.size[0]}x{p.size[1]} inputs and the '
            f'test loop runs {p.test_size[0]}x{p.test_size[1]} ones: the '
            "runtimes' rows are evaluated with each input resized to the "
            "files' size and its logits back")
    # the INT8 files' description: the fp32 export's, for INT8
    with open(osp.join(out_dir, 'model_fp32.json')) as f:
        spec = json.load(f)
    spec.update(precision='int8', quantization=dict(
        calib_method=s.calib_method, calib_images=s.calib_images,
        equalize=s.equalize))
    with open(osp.join(out_dir, 'model_int8.json'), 'w') as f:
        json.dump(spec, f, indent=2)
    if not any(osp.samefile(r.file, p.export)
               for r in runs if osp.exists(r.file)):
        os.remove(p.export)   # only the runtimes' input


def _is_qat(run: RuntimeRun) -> bool:
    return bool((run.quantized or {}).get('qat'))


def _key(run: RuntimeRun) -> str:
    """A run's name in the report: ``<runtime>_<precision>``, QAT files'
    ``<runtime>_int8_qat``."""
    return f'{run.runtime}_' + (QAT_PRECISION if _is_qat(run)
                                else run.precision)


def _qat(cfg: Config, checkpoint: str, out_dir: str,
         runtimes: Sequence[Runtime], p: _Prepared, runs: List[RuntimeRun],
         s: QuantizeSettings, log: Callable[[str], None]) -> Optional[dict]:
    """Quantization-aware fine-tuning of the equalized model and every
    runtime's QAT file, each kept only where its argmax agreement with
    fp32 on the control set is not below the post-training file's (else
    removed, with one line saying why). Returns the report's ``qat``
    entry with the kept ``runs``."""
    job = QatJob(iters=s.qat, work_dir=osp.join(out_dir, 'qat'),
                 lr=s.qat_lr, seed=s.seed, pool=p.pool,
                 ignored_types=tuple(dict.fromkeys(
                     t for r in runtimes for t in getattr(
                         r.options_of(options_for(r, s.quant_options)),
                         'ignored_types', ()))),
                 preset=s.runtime_options.get('preset', 'performance'),
                 calib_method=s.calib_method, targets=s.qat_targets)
    batch = int(cfg.train_dataloader.get('batch_size', 1))
    why = check_qat_job(job, len(p.pool), batch)
    entry = dict(iterations=s.qat, lr=s.qat_lr, seed=s.seed,
                 targets=s.qat_targets,
                 batch_size=batch, train_images=len(p.pool),
                 work_dir=job.work_dir, written=[], not_written={},
                 control_agreement={}, runs=[])
    if why:
        log(f'note: {why}')
        entry['not_written'] = {r.name: why for r in runtimes}
        return entry
    record = checkpoint_block_type(
        record_of(cfg, None if p.dynamic else p.size), checkpoint)

    def export(result, path):
        export_qat(result.net, path, torch.from_numpy(p.inputs[0]),
                   p.dynamic, qat_record(
                       record, checkpoint, result.iters, result.lr,
                       result.seed, schedule='SGD (the config\'s momentum '
                       'and weight decay), poly 0.9 to 0',
                       batch_size=result.batch_size,
                       train_images=result.train_images,
                       targets=s.qat_targets).to_dict())

    made = make_qat_models(cfg, p.deployed, p.inputs, job, export, out_dir,
                           runtimes, log)
    r = made.result
    entry.update(seconds=r.seconds, seconds_per_iter=r.seconds_per_iter,
                 resumed_at=r.resumed_at, log=r.log_file)
    ptq = {run.runtime: run for run in runs if run.precision == 'int8'}
    models = {REFERENCE: p.model}
    for run in made.runs:
        models[f'{run.runtime}_int8'] = with_forward(
            p.model, ptq[run.runtime].forward)
        models[_key(run)] = with_forward(p.model, run.forward)
    on_control = evaluate(models, cfg, p.control.items, quiet=True)
    ref = on_control[REFERENCE]['preds']
    by_name = {r.name: r for r in runtimes}
    for run in made.runs:
        label = by_name[run.runtime].label
        before = agreement(ref, on_control[f'{run.runtime}_int8']['preds'])
        after = agreement(ref, on_control[_key(run)]['preds'])
        entry['control_agreement'][run.runtime] = dict(
            post_training=before, qat=after)
        if after < before:
            why = (f'{label}: no QAT file: its argmax agreement with fp32 '
                   f'on the control set, {100 * after:.2f}%, is below the '
                   f"post-training file's {100 * before:.2f}%; the "
                   'post-training file stays')
            log(f'note: {why}')
            entry['not_written'][run.runtime] = why
            run.forward.model.close()
            for f in by_name[run.runtime].files(run.file):
                if osp.exists(f):
                    os.remove(f)
        else:
            entry['written'].append(run.file)
            entry['runs'].append(run)
    return entry


def _time(fns: dict, x: torch.Tensor, repeat: int) -> tuple:
    """Median seconds per image of each callable, after one warm-up call
    each, in interleaved rounds, and a note when the timings cannot be
    trusted (:func:`repseg.ops.timing.contention_note`)."""
    with torch.no_grad():
        for fn in fns.values():
            fn(x)
        times = time_interleaved(fns, lambda fn: fn(x), repeat)
    return ({k: statistics.median(v) for k, v in times.items()},
            contention_note(times))


def _evaluate(cfg: Config, p: _Prepared, runs: List[RuntimeRun],
              runtimes: Sequence[Runtime], s: QuantizeSettings) -> dict:
    """Every model on the test set (one pass) and timed side by side; the
    control set of accuracy control again for its fp32 / INT8 pair."""
    on_nnpack = use_nnpack_convs(p.model, 'auto')
    keys = {_key(run): run for run in runs}
    evals = evaluate({REFERENCE: on_nnpack,
                      **{k: with_forward(p.model, run.forward)
                         for k, run in keys.items()}}, cfg)
    speed, timing_note = _time(
        {REFERENCE: SegForward(on_nnpack),
         **{k: run.forward for k, run in keys.items()}},
        torch.from_numpy(p.inputs[0]), s.repeat)
    if timing_note:
        print_log(f'note: {timing_note}', logger='current')
    by_name = {r.name: r for r in runtimes}
    rows = [dict(name=REFERENCE, runtime=PYTORCH, precision='fp32',
                 precision_ran='fp32', kernels='',
                 threads=torch.get_num_threads(), file=None,
                 float_layers=[])]
    for k, run in keys.items():
        i, r = run.info, by_name[run.runtime]
        rows.append(dict(
            name=k, runtime=run.runtime, precision=run.precision,
            precision_ran=i.precision, kernels=i.kernels,
            threads=i.threads, file=i.file, float_layers=i.float_layers))
        if _is_qat(run):
            rows[-1].update(qat=True, label=f'{r.label} INT8 QAT ({s.qat} '
                            f'iterations, lr {s.qat_lr:g}, '
                            f'{s.qat_targets} targets)')
        elif run.precision == 'int8':
            rows[-1]['label'] = f'{r.label} INT8 (' + r.quant_label(
                options_for(r, s.quant_options)) + ')'
    ref = evals[REFERENCE]
    for row in rows:
        e = evals[row['name']]
        row.update(metrics=e['metrics'], per_class_iou=e['per_class_iou'],
                   argmax_agreement=agreement(ref['preds'], e['preds']),
                   seconds=speed[row['name']])
    return dict(evals=evals, rows=rows, timing_note=timing_note,
                accuracy_control=_accuracy_control(cfg, p, keys, evals, s))


def _accuracy_control(cfg, p: _Prepared, keys: dict, evals: dict,
                      s: QuantizeSettings) -> Optional[dict]:
    """The control set's fp32 -> INT8 drop of the runtime that controlled
    it, beside the evaluation set's."""
    if p.control is None or s.max_drop is None:
        return None
    int8 = next((run for run in keys.values() if run.precision == 'int8'
                 and not _is_qat(run)
                 and run.quantized and run.quantized.get('control')), None)
    if int8 is None:
        return None
    name = int8.runtime
    pair = {q: with_forward(p.model, keys[f'{name}_{q}'].forward)
            for q in ('fp32', 'int8')}
    on_control = evaluate(pair, cfg, p.control.items, quiet=True)
    c_fp32, c_int8 = (on_control[q]['metrics']['mIoU']
                      for q in ('fp32', 'int8'))
    e_fp32, e_int8 = (evals[f'{name}_{q}']['metrics']['mIoU']
                      for q in ('fp32', 'int8'))
    return dict(
        max_drop=s.max_drop, runtime=name, control_set=p.control.name,
        control_files=[b['data_samples'][0].img_path
                       for b in p.control.items],
        control_fp32_miou=c_fp32, control_int8_miou=c_int8,
        control_drop=c_fp32 - c_int8,
        evaluation_fp32_miou=e_fp32, evaluation_int8_miou=e_int8,
        evaluation_drop=e_fp32 - e_int8,
        float_layers=int8.info.float_layers)


def _report(cfg: Config, checkpoint: str, files: dict, p: _Prepared,
            e: dict, notes: List[str], s: QuantizeSettings,
            qat: Optional[dict] = None) -> dict:
    """quantize.json, quantize.md and per_class_iou.png; returns what the
    JSON holds."""
    result = dict(
        config=cfg.filename, checkpoint=checkpoint, input_size=list(p.size),
        dynamic_shape=p.dynamic,
        backends=list(dict.fromkeys(s.backends)),
        calibration=dict(images=s.calib_images, method=s.calib_method,
                         split='train', pipeline=s.calib_pipeline,
                         seed=s.seed,
                         **runtime_setting_values(s.runtime_options),
                         files=p.calib_files),
        equalization=p.equalization, sensitivity=p.sensitivity,
        evaluation=dict(split='test',
                        images=len(e['evals'][REFERENCE]['preds']),
                        reference=REFERENCE),
        accuracy_control=e['accuracy_control'], qat=qat,
        classes=e['evals'][REFERENCE]['classes'], runs=e['rows'],
        notes=notes + ([e['timing_note']] if e['timing_note'] else []),
        cpu_isa=cpu_vector_isa(), threads=torch.get_num_threads(),
        files={k: v for k, v in files.items() if osp.exists(v)
               or k in ('json', 'md', 'png')})
    with open(files['json'], 'w') as f:
        json.dump(result, f, indent=2)
    with open(files['md'], 'w') as f:
        f.write(markdown(result) + '\n')
    save_per_class_png(result, files['png'])
    return result


def quantize(cfg: Config, checkpoint: str, out_dir: str,
             settings: Optional[QuantizeSettings] = None) -> dict:
    """Fuse, export, calibrate, quantize with every runtime of
    ``settings.backends``, evaluate and time (what tools/quantize.py
    runs); see :class:`QuantizeSettings` for every option.

    Writes the models (``model_{fp32,int8}`` + each runtime's suffix),
    ``quantize.json``, ``quantize.md`` and ``per_class_iou.png`` into
    ``out_dir`` and returns what ``quantize.json`` holds.
    """
    s = settings if settings is not None else QuantizeSettings()
    runtimes = s.check()
    check_data(cfg, ('train_dataloader', 'test_dataloader'))
    if osp.isfile(out_dir):
        raise UsageError(f'the output {out_dir!r} is a file; give a folder')
    files = _files(out_dir, runtimes, bool(s.qat))
    own = ('json', 'md', 'png', 'int8_json')
    made = ('fp32', 'int8') + ((QAT_PRECISION, ) if s.qat else ())
    refuse_overwrite([files[k] for k in own] + [
        f for r in runtimes for q in made
        for f in r.files(files[f'{r.name}_{q}'])], s.force)
    notes = []

    def log(message: str) -> None:
        print_log(message, logger='current')
        if message.startswith('note: '):
            notes.append(message[len('note: '):])

    prepared, runs = _prepare(cfg, checkpoint, out_dir, runtimes, s, log)
    qat = _qat(cfg, checkpoint, out_dir, runtimes, prepared, runs, s, log) \
        if s.qat else None
    if qat:
        runs += qat.pop('runs')
    _finish_runs(out_dir, runs, prepared, s, log)
    for r in runtimes:
        for note in r.notes(cpu_vector_isa(),
                            options_for(r, s.quant_options)):
            log(note)
    evaluated = _evaluate(cfg, prepared, runs, runtimes, s)
    return _report(cfg, checkpoint, files, prepared, evaluated, notes, s,
                   qat)


#: the Markdown of a quantization result (what quantize.md holds)
quantize_report = markdown

__all__ = ['quantize', 'QuantizeSettings', 'check_options',
           'quantize_report']
