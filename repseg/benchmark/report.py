# Copyright (c) repseg contributors. All rights reserved.
"""The benchmark's outputs: Markdown tables (speed, profile), the JSON file
and the charts (speed bars, mIoU vs speed, time by layer kind)."""
import json
import os
import os.path as osp
from typing import Dict, List, Optional

from ..deploy.runtimes import runtime_class, runtime_label, runtime_names
from ..quant.equalize import equalization_lines
from ..ops.nnpack_conv import is_nnpack
from .profile import FUNCTIONAL
from .records import BF16, NATIVE, UNFUSED

# decode head class -> the model's usual name, for the charts
_DECODER_NAMES = dict(PSPHead='PSPNet', UPerHead='UPerNet',
                      DepthwiseSeparableASPPHead='DeepLabV3+',
                      ASPPHead='DeepLabV3', FCNHead='FCN', FPNHead='FPN',
                      SegformerHead='SegFormer head')


# PyTorch's further runs of each model drawn next to its fused fp32 bar
_PYTORCH_RUNS = (('native', 'tab:gray', 'fused, native convs'),
                 ('bf16', 'tab:purple', 'fused, bf16 (PyTorch)'))
# colours of the runtimes' bars, in the order the runs appear
_RUNTIME_COLOURS = ('tab:green', 'tab:red', 'tab:olive', 'tab:pink',
                    'tab:brown', 'tab:cyan', 'gold', 'darkslateblue')


def _extra_runs(rows) -> List[tuple]:
    """(label, colour, legend text) of every run drawn next to the fused
    fp32 bars: PyTorch's, then each runtime's (named from the registry)."""
    extra = [e for e in _PYTORCH_RUNS if any(r.run(e[0]) for r in rows)]
    seen = {}
    for r in rows:
        for label, run in r.runtime_runs().items():
            if label not in seen:
                described = runtime_class(run.runtime).described() \
                    if run.runtime in runtime_names() else run.runtime
                text = f'{runtime_label(run.runtime)} ' + (
                    run.precision if run.precision != 'int8' else
                    'INT8' + described[len(runtime_label(run.runtime)):])
                seen[label] = text + (f' ({run.equalize} equalized)'
                                      if run.equalize else '')
    for i, (label, text) in enumerate(seen.items()):
        extra.append((label, _RUNTIME_COLOURS[i % len(_RUNTIME_COLOURS)],
                      text))
    return extra


def _fmt(v, spec='.2f'):
    return '-' if v is None else format(v, spec)


def markdown_table(result: dict) -> str:
    """The speed table of :func:`~.run.run_benchmark`'s result: one line
    per model (its PyTorch runs), then the runtimes' table."""
    rows = result['rows']
    unf = any(r.run(UNFUSED) for r in rows)
    nat = any(r.run(NATIVE) for r in rows)
    bf16 = any(r.run(BF16) for r in rows)
    head = ['model', 'dilation', 'img/s', 'latency ms (median ± IQR)',
            'params M', 'GFLOPs', 'peak fwd mem MiB', 'vs ResNet']
    if unf:
        head += ['unfused img/s', 'fused/unfused',
                 'max abs(fused-unfused) / max abs(logit)']
    if nat:
        head += ['native-conv img/s', 'nnpack/native']
    if bf16:
        head += ['bf16 img/s', 'bf16/fp32', 'bf16 argmax agreement %']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for r in rows:
        f = r.fused
        vs = (f'{r.speed_vs_baseline:.2f}x {r.baseline}'
              if r.speed_vs_baseline else '-')
        cells = [r.name, r.dilation_mode or '-', _fmt(f.img_per_s, '.3f'),
                 f'{f.latency_ms:.0f} ± {f.latency_iqr_ms:.0f}',
                 _fmt(r.params_m), _fmt(r.gflops, '.1f'),
                 _fmt(f.peak_mem_mib, '.0f'), vs]
        if unf:
            u = r.run(UNFUSED)
            cells += [_fmt(u and u.img_per_s, '.3f'),
                      _fmt(r.fused_speedup) + 'x',
                      _fmt(u and u.relative_diff, '.1e')]
        if nat:
            n = r.run(NATIVE)
            cells += [_fmt(n and n.img_per_s, '.3f'),
                      _fmt(r.conv_impl_speedup) + 'x']
        if bf16:
            b = r.run(BF16)
            cells += [_fmt(b and b.img_per_s, '.3f'),
                      _fmt(b and b.vs_pytorch) + 'x',
                      _fmt(b and 100 * b.argmax_agreement, '.2f')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    e = result['env']
    lines.append('')
    lines.append(
        f"device {e['device']} ({e['device_name']}), {e['threads']} threads, "
        f"batch {e['batch']}, input {e['shape'][0]}x{e['shape'][1]}, "
        f"{e['dtype']}{' +amp' if e['amp'] else ''}"
        f"{', channels_last' if e['channels_last'] else ''}"
        f"{', torch.compile' if e['compile'] else ''}, warm-up "
        f"{e['warmup']}, {e['iters']} timed batches x {e['repeat']} "
        f"interleaved rounds, cudnn.benchmark={e['cudnn_benchmark']}; "
        f"CPU vector ISA: {e.get('cpu_isa', 'unknown')}; "
        f"torch {e['torch']}, mmcv {e['mmcv']}, mmseg {e['mmseg']}. "
        'All models fused (RepVGG blocks re-parameterized, conv-BN folded); '
        + ('3x3 stride-1 convs of every model on NNPACK Winograd '
           f"(conv_impl {e['conv_impl']!r})."
           if is_nnpack(e.get('conv_impl', 'native')) else
           "PyTorch's native convolutions (conv_impl 'native')."))
    if e.get('timing_note'):
        lines += ['', f"**Warning**: {e['timing_note']}"]
    runtimes = runtime_table(result)
    if runtimes:
        lines += ['', runtimes]
    return '\n'.join(lines)


def runtime_table(result: dict) -> Optional[str]:
    """One line per model, runtime and precision (what the runtime says it
    ran, its kernels, speed against the same model's PyTorch rows, output
    agreement with PyTorch fp32), or None when no runtime was timed."""
    rows = [r for r in result['rows'] if r.runtime_runs()]
    if not rows:
        return None
    nat = any(run.vs_pytorch_native is not None for r in rows
              for run in r.runtime_runs().values())
    tp = any(run.throughput_img_per_s for r in rows
             for run in r.runtime_runs().values())
    head = ['model', 'runtime', 'asked', 'precision ran', 'img/s',
            'latency ms (median ± IQR)', 'vs PyTorch fp32 (fused, '
            'fastest conv)'] + (['vs PyTorch fp32 native conv'] if nat
                                else []) + [
        'max abs diff / max abs logit', 'argmax agreement %',
        'convs+matmuls in float', 'kernels'] + (
            ['throughput img/s (streams x requests)',
             'throughput / latency'] if tp else [])
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        for run in r.runtime_runs().values():
            cells = [r.name, runtime_label(run.runtime),
                     run.precision + (f' ({run.equalize} equalized)'
                                      if run.equalize else ''),
                     run.precision_ran,
                     _fmt(run.img_per_s, '.3f'),
                     f'{run.latency_ms:.0f} ± {run.latency_iqr_ms:.0f}',
                     _fmt(run.vs_pytorch) + 'x']
            if nat:
                cells.append(_fmt(run.vs_pytorch_native) + 'x')
            cells += [_fmt(run.relative_diff, '.1e'),
                      _fmt(100 * run.argmax_agreement, '.2f'),
                      str(run.float_layers)
                      if run.precision == 'int8' else '-',
                      run.kernels or '-']
            if tp:
                cells += [f'{_fmt(run.throughput_img_per_s, ".3f")} ('
                          f'{run.throughput_streams} x '
                          f'{run.throughput_requests})',
                          _fmt(run.throughput_vs_latency) + 'x']
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += [f'\n{r.name}: ' + ' '.join(equalization_lines(r.equalization))
              for r in rows if r.equalization]
    e = result['env']
    if e.get('int8_schemes'):
        lines += ['', 'INT8 models (calibrated on random inputs, for timing '
                  'only): ' + '; '.join(f'{runtime_label(n)}: {scheme}'
                                        for n, scheme in
                                        e['int8_schemes'].items()) + '.']
    lines += [f"Note: {n[len('note: '):] if n.startswith('note: ') else n}"
              for n in e.get('runtime_notes', [])]
    return '\n'.join(lines)


def _profiles(result: dict) -> List[tuple]:
    """(row name, form label, profile) of every profiled run."""
    return [(r.name, label, run.profile) for r in result['rows']
            for label, run in r.runs.items() if run.profile]


def _profile_columns(profiles: List[tuple], min_ms: float = 1.0
                     ) -> List[str]:
    """Layer kinds worth a column (at least ``min_ms`` somewhere), most
    time first; :data:`FUNCTIONAL` last."""
    peak = {}
    for _, _, prof in profiles:
        for kind, ms in prof['kinds'].items():
            if kind != FUNCTIONAL:
                peak[kind] = max(peak.get(kind, 0.0), ms)
    cols = sorted((k for k, v in peak.items() if v >= min_ms),
                  key=lambda k: -peak[k])
    return cols + ['other layers', FUNCTIONAL]


def _profile_cells(prof: dict, cols: List[str]) -> List[float]:
    named = set(cols)
    other = sum(ms for k, ms in prof['kinds'].items() if k not in named)
    return [other if c == 'other layers' else prof['kinds'].get(c, 0.0)
            for c in cols]


def profile_table(result: dict) -> Optional[str]:
    """Markdown table of the ``--profile`` results (ms of one forward by
    model part and by layer kind), or None if nothing was profiled."""
    profiles = _profiles(result)
    if not profiles:
        return None
    parts = [p for p in ('backbone', 'neck', 'decode_head', 'rest')
             if any(p in prof['parts'] for _, _, prof in profiles)]
    cols = _profile_columns(profiles)
    head = ['model', 'form', 'total ms'] + [f'{p} ms' for p in parts] + cols
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for name, label, prof in profiles:
        cells = [name, label, f"{prof['total_ms']:.0f}"]
        cells += [_fmt(prof['parts'].get(p), '.0f') for p in parts]
        cells += [f'{ms:.0f}' for ms in _profile_cells(prof, cols)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'ms of one forward after the timed rounds, by part and by '
              'layer kind (the forward of every leaf module timed; '
              f'"{FUNCTIONAL}" is the time outside them).']
    return '\n'.join(lines)


def _save_profile_png(result: dict, path: str) -> None:
    import matplotlib.pyplot as plt
    profiles = _profiles(result)
    cols = _profile_columns(profiles)
    labels = [f'{name} {label}' for name, label, _ in profiles]
    # tall enough for the bars and for the legend (one line per kind)
    fig, ax = plt.subplots(figsize=(11, max(1.2 + 0.45 * len(profiles),
                                            0.6 + 0.2 * len(cols))))
    cells = [_profile_cells(prof, cols) for _, _, prof in profiles]
    left = [0.0] * len(profiles)
    cmap = plt.get_cmap('tab20')
    for j, col in enumerate(cols):
        widths = [row[j] for row in cells]
        ax.barh(labels, widths, left=left, color=cmap(j % 20), label=col)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel('ms per forward (one forward, leaf modules timed)')
    ax.set_title('Where the time goes, by layer kind')
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_speed(ax, result: dict) -> None:
    """Speed bars of every model: fused fp32 (the unfused form hatched over
    it), each further run of the model beside it, values at the bars."""
    from matplotlib.patches import Patch
    rows = result['rows']
    speeds = [r.fused.img_per_s for r in rows]
    unfused = [r.run(UNFUSED) and r.run(UNFUSED).img_per_s for r in rows]
    extra = _extra_runs(rows)
    h = 0.8 / (1 + len(extra))   # one bar per run of a model, grouped
    ys = [i - 0.4 + h / 2 for i in range(len(rows))]
    ax.barh(ys, speeds, height=h, color=['tab:orange' if r.is_resnet
                                         else 'tab:blue' for r in rows])
    handles = [Patch(color='tab:blue', label='RepVGG (fused)')] if any(
        not r.is_resnet for r in rows) else []
    if any(r.is_resnet for r in rows):
        handles.append(Patch(color='tab:orange',
                             label='ResNet (conv-BN folded)'))
    if any(u is not None for u in unfused):
        ax.barh(ys, [u or 0 for u in unfused], height=h, color='none',
                edgecolor='k', hatch='//')
        handles.append(Patch(facecolor='none', edgecolor='k', hatch='//',
                             label='unfused (training form)'))
    bars = [(ys, speeds, unfused)]
    for k, (label, color, text) in enumerate(extra, 1):
        vals = [r.run(label) and r.run(label).img_per_s for r in rows]
        pos = [y + k * h for y in ys]
        ax.barh(pos, [v or 0 for v in vals], height=h, color=color)
        handles.append(Patch(color=color, label=text))
        bars.append((pos, vals, [None] * len(rows)))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.name for r in rows])
    ax.legend(handles=handles, fontsize=8, loc='best')
    ax.invert_yaxis()
    e = result['env']
    ax.set_xlabel(f"images / second ({e['device']}, batch {e['batch']}, "
                  f"{e['shape'][0]}x{e['shape'][1]}, {e['dtype']}; CPU "
                  f"{e.get('cpu_isa', 'unknown')})")
    decoders = sorted({_DECODER_NAMES.get(r.decoder, r.decoder)
                       for r in rows if r.decoder})
    ax.set_title(f"{' / '.join(decoders) or 'Segmentor'} inference speed "
                 '(fused)')
    longest = 0.0
    for pos, vals, under in bars:
        for y, v, u in zip(pos, vals, under):
            if v is None:
                continue
            ax.text(v, y, f' {v:.3g}' + (f' (unfused {u:.3g})' if u else ''),
                    va='center', fontsize=8 if len(bars) == 1 else 7)
            longest = max(longest, v, u or 0)
    # room for the value labels right of the longest bar
    ax.set_xlim(0, 1.45 * longest)


def _draw_miou(ax, known: list) -> None:
    """The paper's mIoU against the speed measured here."""
    for r in known:
        c = 'tab:orange' if r.is_resnet else 'tab:blue'
        ax.scatter(r.fused.img_per_s, r.paper_miou, color=c)
        ax.annotate(r.name, (r.fused.img_per_s, r.paper_miou),
                    textcoords='offset points', xytext=(4, 4), fontsize=8)
    ax.set_xlabel('images / second (measured here)')
    ax.set_ylabel('Cityscapes val mIoU (paper, Table 8)')
    ax.set_title('mIoU vs speed')
    ax.grid(alpha=0.3)


def save_outputs(result: dict, out_dir: str) -> Dict[str, str]:
    """Write ``benchmark.json`` and ``benchmark.png`` (speed bars, and mIoU
    vs speed where the paper's mIoU is known) into ``out_dir``, and
    ``profile.png`` (time by layer kind) when the runs were profiled."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'benchmark.json')
    with open(json_path, 'w') as f:
        json.dump(dict(result, rows=[r.to_dict() for r in result['rows']]),
                  f, indent=2)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    known = [r for r in result['rows'] if r.paper_miou]
    fig, axes = plt.subplots(1, 2 if known else 1,
                             figsize=(13 if known else 7, 4.5))
    axes = list(axes) if known else [axes]
    _draw_speed(axes[0], result)
    if known:
        _draw_miou(axes[1], known)
    fig.tight_layout()
    png_path = osp.join(out_dir, 'benchmark.png')
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    files = dict(json=json_path, png=png_path)
    if _profiles(result):
        files['profile_png'] = osp.join(out_dir, 'profile.png')
        _save_profile_png(result, files['profile_png'])
    return files


__all__ = ['markdown_table', 'runtime_table', 'profile_table', 'save_outputs']
