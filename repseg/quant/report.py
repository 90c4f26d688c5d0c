# Copyright (c) repseg contributors. All rights reserved.
"""The INT8 report of a quantization run (:func:`repseg.apis.quantize`):
every runtime and precision side by side in a Markdown table, then
calibration, accuracy control, equalization and per-layer sensitivity;
and the per-class IoU change chart."""
from typing import List

from ..deploy.runs import PYTORCH
from ..deploy.runtimes import (DEFAULT_CALIB_METHOD, QuantOptions,
                              get_runtime, options_for, runtime_label,
                              runtime_names)
from .equalize import equalization_lines
from .sensitivity import sensitivity_table


def _options(rt, result: dict) -> QuantOptions:
    """The settings ``rt`` quantized with in the run of ``result``: its own
    ones (``rt.own_options``) as ``calibration`` recorded them (defaults
    for what an older run did not record)."""
    c = result.get('calibration') or {}
    ac = result.get('accuracy_control') or {}
    return options_for(rt, QuantOptions(
        calib_method=c.get('method', DEFAULT_CALIB_METHOD),
        max_drop=ac.get('max_drop') if ac.get('runtime') == rt.name
        else None,
        runtime_options={f.name: c[f.name]
                         for f in rt.own_options.settings() if f.name in c}))


def row_title(row: dict, result: dict) -> str:
    """'OpenVINO INT8 (NNCF, performance preset, minmax)' and the like for
    a row of a quantization run: the label the run recorded, else (a
    report of an older run) the runtime's name, the precision and, for
    INT8, the runtime's :meth:`~repseg.deploy.runtimes.Runtime.quant_label`
    of the run's calibration settings."""
    if row.get('label'):
        return row['label']
    precision = 'INT8' if row['precision'] == 'int8' else row['precision']
    if row['runtime'] == PYTORCH:
        return f'PyTorch {precision} (fused)'
    name = f"{runtime_label(row['runtime'])} {precision}"
    if row['precision'] != 'int8' or row['runtime'] not in runtime_names():
        return name
    rt = get_runtime(row['runtime'])
    return f'{name} ({rt.quant_label(_options(rt, result))})'


def settings_lines(result: dict) -> List[str]:
    """One line per runtime of the run that has settings of its own
    (``own_options``): each setting's value, with its default where it
    differs."""
    lines = []
    for name in result.get('backends') or []:
        if name not in runtime_names():
            continue
        rt = get_runtime(name)
        own = rt.options_of(_options(rt, result))
        said = []
        for f in own.settings():
            value = getattr(own, f.name)
            said.append(f'{f.name} {_shown(value)}' + (
                f' (default {_shown(f.default)})' if value != f.default
                else ''))
        if said:
            lines.append(f'{rt.described()} settings: {", ".join(said)}.')
    return lines


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ' '.join(map(str, value)) or 'none'
    return str(value)


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
            f"| {row_title(r, result)} | {r['precision_ran']} | "
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
              f"{result['cpu_isa']}."] + settings_lines(result)
    ac = result.get('accuracy_control')
    if ac:
        lines.append(
            f"Accuracy control ({runtime_label(ac['runtime'])}, max drop "
            f"{ac['max_drop']:g} mIoU) "
            f"on the control set, {ac['control_set']}: fp32 "
            f"{ac['control_fp32_miou']:.2f} -> INT8 "
            f"{ac['control_int8_miou']:.2f} (drop {ac['control_drop']:+.2f}"
            f"); on the evaluation set: {ac['evaluation_fp32_miou']:.2f} -> "
            f"{ac['evaluation_int8_miou']:.2f} (drop "
            f"{ac['evaluation_drop']:+.2f}); left in float: "
            + (', '.join(ac['float_layers']) or 'nothing') + '.')
    for r in rows:
        if r['precision'] == 'int8' and r['float_layers']:
            lines.append(f"{row_title(r, result)} keeps in float: "
                         + ', '.join(r['float_layers'][:12])
                         + (' ...' if len(r['float_layers']) > 12 else ''))
    lines += qat_lines(result)
    if result.get('equalization'):
        lines += equalization_lines(result['equalization'])
    lines += [f'Note: {n}' for n in result.get('notes', [])]
    lines += sensitivity_table(result.get('sensitivity') or [])
    return '\n'.join(lines)


def qat_lines(result: dict) -> List[str]:
    """The quantization-aware fine-tuning of a run in words: its
    schedule and cost, each runtime's control-set agreement with fp32
    before (post-training) and after, and why a QAT file was not
    written."""
    q = result.get('qat')
    if not q:
        return []
    cost = ''
    if q.get('seconds') is not None:
        cost = f", {q['seconds']:.0f} s" + (
            f" ({q['seconds_per_iter']:.2f} s per iteration)"
            if q.get('seconds_per_iter') else '')
        if q.get('resumed_at'):
            cost += f", resumed at iteration {q['resumed_at']}"
    lines = [f"Quantization-aware fine-tuning: {q['iterations']} iterations "
             f"of {q['batch_size']} images from {q['train_images']} train "
             f"images (the control set held out), lr {q['lr']:g}, seed "
             f"{q['seed']}, targets: {q.get('targets', 'labels')}{cost}; "
             f"checkpoints and log in {q['work_dir']}."]
    for name, a in (q.get('control_agreement') or {}).items():
        lines.append(
            f'{runtime_label(name)} argmax agreement with fp32 on the '
            f"control set: post-training {100 * a['post_training']:.2f}% "
            f"-> QAT {100 * a['qat']:.2f}%"
            + (' (QAT file written).' if name not in
               (q.get('not_written') or {}) else '.'))
    for why in dict.fromkeys((q.get('not_written') or {}).values()):
        lines.append(why[:1].upper() + why[1:] + '.')
    return lines


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
               label=f"{row_title(r, result)}: mIoU "
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


__all__ = ['PYTORCH', 'markdown', 'row_title', 'settings_lines', 'qat_lines',
           'save_per_class_png']
