# Copyright (c) repseg contributors. All rights reserved.
"""Where the time of a forward goes, by layer kind and by model part.

The benchmark's ``--profile`` uses it to answer the questions its speed
targets raise (is a dilated 3x3 conv slower than a plain one, what do the
groups cost, how much of the unfused time is the 1x1 branches and BNs that
fusion removes, how much is the decode head that fusion does not touch).

Each leaf module (a module without children) and each part is timed by
wrapping its ``forward``; what happens outside leaf modules (residual adds,
branch sums, concat, resize of the logits, functional pooling) is reported as
:data:`FUNCTIONAL`. The wrappers cost microseconds per module, negligible
against the 10-1000 ms layers of a 713x713 segmentor.
"""
import contextlib
import functools
import time
from collections import defaultdict
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops.nnpack_conv import NNPACKConv2d

#: time spent outside leaf modules
FUNCTIONAL = 'functional ops (adds, concat, resize, ...)'

__all__ = ['FUNCTIONAL', 'layer_kind', 'profile_layers']


def layer_kind(module: nn.Module) -> str:
    """A short name of what ``module`` computes, for grouping times.

    Convolutions are named by kernel, stride, dilation, groups and backend:
    ``'conv3x3'``, ``'conv3x3 dilated'``, ``'conv3x3 grouped'``,
    ``'conv3x3 s2'``, ``'conv1x1'``, ... with ``' [nnpack]'`` for an
    :class:`~repseg.ops.NNPACKConv2d`. BNs are ``'batchnorm'``,
    activations ``'activation'``, pooling layers ``'pooling'``; anything
    else is its class name."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        kind = f'conv{kh}x{kw}'
        if max(module.stride) > 1:
            kind += f' s{max(module.stride)}'
        if max(module.dilation) > 1:
            kind += ' dilated'
        if module.groups > 1:
            kind += (' depthwise' if module.groups == module.in_channels
                     else ' grouped')
        if isinstance(module, NNPACKConv2d):
            kind += ' [nnpack]'
        return kind
    if isinstance(module, (_BatchNorm, nn.GroupNorm, nn.LayerNorm)):
        return 'batchnorm' if isinstance(module, _BatchNorm) else 'norm'
    if type(module).__module__ == nn.modules.activation.__name__:
        return 'activation'
    if type(module).__module__ == nn.modules.pooling.__name__:
        return 'pooling'
    return type(module).__name__


def _parts(model: nn.Module) -> Dict[str, nn.Module]:
    """The named parts of a segmentor (possibly wrapped once, like the
    benchmark's ``SegForward``): backbone, neck, decode head."""
    seg = getattr(model, 'segmentor', model)
    return {
        name: getattr(seg, name)
        for name in ('backbone', 'neck', 'decode_head')
        if isinstance(getattr(seg, name, None), nn.Module)
    }


@contextlib.contextmanager
def _timed_forwards(targets, sync):
    """Within the block, each ``module`` of ``targets`` ((module, key,
    table) triples) adds the time of its forwards to ``table[key]``.

    ``forward`` is replaced by an instance attribute (restored afterwards,
    also when the block raises). Wrapping ``forward`` rather than using
    forward hooks also times modules called as ``module.forward(...)``,
    like mmseg's ``decode_head`` from ``predict``.
    """
    def timed(forward, key, table):
        @functools.wraps(forward)
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            sync()
            table[key] += time.perf_counter() - start
            return out
        return wrapper

    saved = []
    try:
        for module, key, table in targets:
            saved.append((module, vars(module).get('forward')))
            module.forward = timed(module.forward, key, table)
        yield
    finally:
        for module, own in reversed(saved):
            if own is None:
                del module.forward
            else:
                module.forward = own


def profile_layers(model: nn.Module,
                   x: torch.Tensor,
                   runs: int = 1,
                   sync: Optional[Callable[[], None]] = None) -> dict:
    """Time ``runs`` forwards of ``model(x)`` (after one untimed forward)
    and split the time by layer kind (:func:`layer_kind`) and by part.

    Args:
        model (nn.Module): called as ``model(x)``; left as it was, also
            when the forward raises.
        x (Tensor): the input, e.g. (N, 3, H, W).
        runs (int): timed forwards to average over. Default: 1.
        sync (callable | None): called before each clock reading (e.g.
            ``torch.cuda.synchronize`` on a GPU, where kernels are
            asynchronous).

    Returns:
        dict: ``total_ms`` (mean forward time), ``kinds`` ({kind: ms},
        including :data:`FUNCTIONAL` = total - all leaf modules, largest
        first), ``parts`` ({'backbone'/'neck'/'decode_head'/'rest': ms})
        and ``layers`` ({kind: number of modules}).
    """
    if runs < 1:
        raise ValueError(f'runs must be >= 1, got {runs}')
    sync = sync or (lambda: None)
    kinds, parts = defaultdict(float), defaultdict(float)
    counts = defaultdict(int)
    # Every leaf and part gets a timed ``forward`` (see _timed_forwards).
    targets = [(m, layer_kind(m), kinds) for m in model.modules()
               if next(m.children(), None) is None]
    targets += [(m, name, parts) for name, m in _parts(model).items()]
    for _, key, table in targets:
        if table is kinds:
            counts[key] += 1
    with torch.no_grad():
        model(x)
        with _timed_forwards(targets, sync):
            sync()
            t0 = time.perf_counter()
            for _ in range(runs):
                model(x)
            sync()
            total = time.perf_counter() - t0
    kinds[FUNCTIONAL] = total - sum(kinds.values())
    if parts:
        parts['rest'] = total - sum(parts.values())
    ms = 1e3 / runs
    return dict(
        total_ms=total * ms,
        kinds={k: v * ms for k, v in
               sorted(kinds.items(), key=lambda kv: -kv[1])},
        parts={k: v * ms for k, v in parts.items()},
        layers=dict(counts))
