# Copyright (c) repseg contributors. All rights reserved.
"""Overlays that explain themselves: mmseg's SegLocalVisualizer draws the
ground truth (left) and the prediction (right) side by side with nothing to
say which is which; :func:`annotate_overlay` re-draws such a PNG with a
title over each half and a colour legend of the classes."""
import os
import os.path as osp
from typing import Iterable, List, Optional, Sequence

import numpy as np


def annotate_overlay(path: str,
                     classes: Sequence[str],
                     palette: Sequence[Sequence[int]],
                     left: str = 'ground truth',
                     right: str = 'prediction (fused model)',
                     out: Optional[str] = None) -> str:
    """Re-draw the side-by-side overlay ``path`` (left half: ground truth,
    right half: prediction, as mmseg draws them) with a title over each
    half and a legend of the class colours; written to ``out`` (default:
    ``path`` itself). Returns the written file."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    import mmcv
    img = mmcv.imread(path, channel_order='rgb')
    h, w = img.shape[:2]
    ncol = min(len(classes), 7)
    rows = -(-len(classes) // ncol)
    scale = max(w / 100, 6.0) / (w / 100)
    fig_w = w / 100 * scale
    fig_h = h / 100 * scale + 0.5 + 0.28 * rows
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=100)
    top = 0.35 / fig_h
    legend_h = (0.15 + 0.28 * rows) / fig_h
    ax = fig.add_axes([0, legend_h, 1, 1 - legend_h - top])
    ax.imshow(img)
    ax.set_axis_off()
    for x, text in ((0.25, left), (0.75, right)):
        ax.text(x, 1.0, text, transform=ax.transAxes, ha='center',
                va='bottom', fontsize=11, weight='bold')
    ax.axvline(w / 2 - 0.5, color='white', linewidth=1.5)
    handles = [
        Patch(facecolor=np.array(c) / 255.0, edgecolor='black',
              linewidth=0.3, label=name)
        for name, c in zip(classes, palette)
    ]
    fig.legend(handles=handles, loc='lower center', ncol=ncol, fontsize=7,
               frameon=False, handlelength=1.2, columnspacing=0.8)
    target = out or path
    tmp = target + '.tmp.png'
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, target)
    return target


def annotate_overlays(paths: Iterable[str], classes: Sequence[str],
                      palette: Sequence[Sequence[int]]) -> List[str]:
    """:func:`annotate_overlay` for each of ``paths``."""
    return [annotate_overlay(p, classes, palette) for p in paths]


def new_pngs(folder: str, since: float) -> List[str]:
    """PNG files under ``folder`` written at or after time ``since``."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = osp.join(root, name)
            if name.endswith('.png') and osp.getmtime(path) >= since:
                found.append(path)
    return sorted(found)
