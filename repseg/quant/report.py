# Copyright (c) repseg contributors. All rights reserved.
"""The INT8 report of a quantization run (:func:`repseg.apis.quantize`):
every runtime and precision side by side in a Markdown table, then
calibration, accuracy control, equalization and per-layer sensitivity;
and the per-class IoU change chart."""
from ..deploy.runs import PYTORCH
from ..deploy.runtimes import (DEFAULT_CALIB_METHOD, QuantOptions,
                              get_runtime, options_for, runtime_label,
                              runtime_names)
from .equalize import equalization_lines
from .sensitivity import sensitivity_table


def run_label(row: dict, result: dict) -> str:
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
    c = result.get('calibration') or {}
    ac = result.get('accuracy_control') or {}
    rt = get_runtime(row['runtime'])
    options = options_for(rt, QuantOptions(
        calib_method=c.get('method', DEFAULT_CALIB_METHOD),
        reduce_range=c.get('reduce_range', False),
        preset=c.get('preset', 'performance'),
        max_drop=ac.get('max_drop') if ac.get('runtime') == rt.name
        else None))
    return f'{name} ({rt.quant_label(options)})'


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


__all__ = ['PYTORCH', 'markdown', 'run_label', 'save_per_class_png']
