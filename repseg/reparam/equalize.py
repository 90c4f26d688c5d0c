# Copyright (c) repseg contributors. All rights reserved.
"""Channel equalization of a fused model: the algebra and the data flow it
applies to.

In a pair ``conv1 -> ReLU -> conv2`` (conv1's output read by nothing else),
scaling output channel ``c`` of conv1 (weights and bias) by ``1 / s_c`` and
input channel ``c`` of conv2 by ``s_c`` computes exactly the same function
for any ``s_c > 0``, because ``ReLU(x / s) = ReLU(x) / s`` (Nagel et al.,
"Data-Free Quantization Through Weight Equalization and Bias Correction",
ICCV 2019). The scales decide how INT8 sees the pair: conv2's weights are
quantized per OUTPUT channel, so one huge tap (RepVGG's identity-BN tap on
a nearly dead channel) makes every other weight of its output channel
round to zero; shrinking the input channel that tap reads removes it.
Clearing conv2's taps on an input channel is exact only where that channel
is zero for every input, so the caller decides where it is allowed (from
calibration statistics: :mod:`repseg.quant.equalize`).

A squeeze-and-excitation between conv1 and the ReLU
(``ReLU(z * g(mean(z)))``, RepVGG-D2se) keeps the pair exact when the
squeeze conv that reads ``mean(z)`` has its input channel ``c`` scaled by
``s_c`` too: the gate ``g`` sees the same numbers, and ``z * g`` scales
with ``z`` (:attr:`Pair.through`).

All arithmetic is float64, cast back to the weights' dtype (as in
:mod:`.fusion`). Pairs are found from the traced data flow
(:func:`relu_pairs`), so any traceable module works: RepVGG stages, across
stage boundaries, ResNet bottlenecks whose BN was folded.
"""
from typing import List, Sequence

import operator

import torch
import torch.nn as nn
from torch import Tensor


class Pair(tuple):
    """``(name1, conv1, name2, conv2)`` of a ``conv1 -> ReLU -> conv2``
    pair; ``through``: the convs that read conv1's output on the way (a
    squeeze-and-excitation's squeeze conv, reading its global mean), whose
    input channels are scaled with conv2's."""

    def __new__(cls, name1: str, conv1: nn.Conv2d, name2: str,
                conv2: nn.Conv2d, through: Sequence[nn.Conv2d] = ()):
        pair = super().__new__(cls, (name1, conv1, name2, conv2))
        pair.through = tuple(through)
        return pair

# modules that pass a tensor through unchanged (folded BNs leave these)
_PASS_THROUGH = (nn.Identity, nn.Dropout)


def _by_group(weight: Tensor, groups: int) -> Tensor:
    """A conv weight (out, in/groups, kh, kw) viewed as
    (groups, out/groups, in/groups, kh, kw): input channel ``c`` is
    ``[c // (in/groups), :, c % (in/groups)]``."""
    out, per_group = weight.shape[:2]
    return weight.reshape(groups, out // groups, per_group,
                          *weight.shape[2:])


def input_channel_ranges(conv: nn.Conv2d) -> Tensor:
    """max |w| over the weights that read each input channel of ``conv``
    (float64, (in_channels,))."""
    w = _by_group(conv.weight.detach().double().abs(), conv.groups)
    return w.amax(dim=(1, 3, 4)).flatten()


def _scale_inputs(weight: Tensor, groups: int, scale: Tensor) -> Tensor:
    """``weight`` with the weights that read input channel ``c`` multiplied
    by ``scale[c]``."""
    w = _by_group(weight, groups)
    s = scale.reshape(groups, 1, -1, 1, 1).to(w.dtype)
    return (w * s).reshape(weight.shape)


def output_channel_ranges(conv: nn.Conv2d) -> Tensor:
    """max |w| of each output channel of ``conv`` (float64)."""
    return conv.weight.detach().double().abs().flatten(1).max(1).values


def outlier_ratio(conv: nn.Conv2d) -> Tensor:
    """Per output channel: its largest |weight| over the median |weight|.
    Per-channel INT8 rounds every weight below ``max / 254`` to zero, so a
    ratio in the hundreds means most of the channel's taps are lost
    (a statistic: computed in the weights' own precision)."""
    w = conv.weight.detach().abs().flatten(1)
    return w.max(1).values / w.median(1).values.clamp_min(1e-30)


@torch.no_grad()
def rescale_pair_(conv1: nn.Conv2d, conv2: nn.Conv2d, scale: Tensor,
                  through: Sequence[nn.Conv2d] = ()) -> None:
    """Scale output channel ``c`` of ``conv1`` by ``1 / scale[c]`` and the
    weights of ``conv2`` (and of the ``through`` convs, e.g. an SE's
    squeeze) that read input channel ``c`` by ``scale[c]``, in place. Exact
    through a ReLU (or any positively homogeneous activation) between them
    for ``scale > 0``."""
    scale = scale.detach().double()
    if scale.numel() != conv1.out_channels or \
            conv1.out_channels != conv2.in_channels:
        raise ValueError(
            f'a pair needs conv1.out_channels == conv2.in_channels == '
            f'len(scale); got {conv1.out_channels}, {conv2.in_channels}, '
            f'{scale.numel()}')
    if not bool((scale > 0).all()):
        raise ValueError('equalization scales must be positive (scaling by '
                         '0 would cut a channel, not rescale it)')
    w1 = conv1.weight.detach().double()
    shape = (-1, ) + (1, ) * (w1.dim() - 1)
    conv1.weight.copy_((w1 / scale.view(shape)).to(conv1.weight.dtype))
    if conv1.bias is not None:
        conv1.bias.copy_((conv1.bias.detach().double() / scale).to(
            conv1.bias.dtype))
    for conv in (conv2, ) + tuple(through):
        w2 = _scale_inputs(conv.weight.detach().double(), conv.groups, scale)
        conv.weight.copy_(w2.to(conv.weight.dtype))


@torch.no_grad()
def clear_input_channels_(conv: nn.Conv2d, channels: Sequence[int]) -> None:
    """Zero the weights of ``conv`` that read ``channels``, in place. Exact
    only where those channels are zero for every input the model gets."""
    keep = torch.ones(conv.in_channels, dtype=conv.weight.dtype)
    keep[[int(c) for c in channels]] = 0
    conv.weight.copy_(_scale_inputs(conv.weight.detach(), conv.groups, keep))


def cle_scales(conv1: nn.Conv2d, conv2: nn.Conv2d) -> Tensor:
    """Cross-layer equalization's scales (Nagel et al.):
    ``s_c = sqrt(r1_c / r2_c)`` with ``r1_c`` the weight range of conv1's
    output channel ``c`` and ``r2_c`` that of conv2's input channel ``c``,
    so that both become ``sqrt(r1_c * r2_c)``. Channels without weights on
    either side keep scale 1."""
    r1, r2 = output_channel_ranges(conv1), input_channel_ranges(conv2)
    s = torch.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    s[ok] = (r1[ok] / r2[ok]).sqrt()
    return s


def _is(graph_module, node, types) -> bool:
    return node.op == 'call_module' and isinstance(
        graph_module.get_submodule(node.target), types)


def _is_relu(graph_module, node) -> bool:
    import torch.nn.functional as F
    if _is(graph_module, node, (nn.ReLU, )):
        return True
    return node.op in ('call_function', 'call_method') and node.target in (
        torch.relu, F.relu, 'relu', torch.relu_, 'relu_')


def _skip_pass_through(graph_module, node):
    while _is(graph_module, node, _PASS_THROUGH) and len(node.users) == 1:
        node = next(iter(node.users))
    return node


def _is_mul(node) -> bool:
    return node.op in ('call_function', 'call_method') and node.target in (
        operator.mul, torch.mul, 'mul')


def _through_se(gm, node, calls):
    """For a conv output read by a squeeze-and-excitation (its global
    average pool and the product ``x * gate``): (the product node, the
    squeeze conv), else None."""
    users = list(node.users)
    if len(users) != 2:
        return None
    pools = [u for u in users if _is(gm, u, (nn.AdaptiveAvgPool2d, ))
             and gm.get_submodule(u.target).output_size in (1, (1, 1))]
    muls = [u for u in users if _is_mul(u) and node in u.args]
    if len(pools) != 1 or len(muls) != 1 or len(pools[0].users) != 1:
        return None
    squeeze = next(iter(pools[0].users))
    if not _is(gm, squeeze, (nn.Conv2d, )) or calls[squeeze.target] != 1:
        return None
    return muls[0], squeeze


def relu_pairs(module: nn.Module, prefix: str = '') -> List[Pair]:
    """Every ``conv1 -> ReLU -> conv2`` of ``module`` whose tensors are read
    by nothing else (so rescaling the pair is exact), from the data flow
    traced with ``torch.fx``: ``[(name1, conv1, name2, conv2)]``, names
    prefixed with ``prefix``. A module that cannot be traced has none
    (``[]``); a conv used twice is never part of a pair."""
    import torch.fx as fx

    class Tracer(fx.Tracer):
        # convolutions (also subclasses such as repseg's NNPACKConv2d) and
        # ReLUs are leaves: the pairs are made of them
        def is_leaf_module(self, m, qualname):
            return isinstance(m, (nn.Conv2d, nn.ReLU)) or \
                super().is_leaf_module(m, qualname)

    try:
        gm = fx.GraphModule(module, Tracer().trace(module))
    except Exception:  # noqa: B902  (untraceable: no pairs, nothing wrong)
        return []
    calls = {}
    for node in gm.graph.nodes:
        if node.op == 'call_module':
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if not _is(gm, node, (nn.Conv2d, )) or calls[node.target] != 1:
            continue
        through = []
        if len(node.users) == 1:
            after = next(iter(node.users))
        else:
            se = _through_se(gm, node, calls)
            if se is None or len(se[0].users) != 1:
                continue
            after = next(iter(se[0].users))
            through = [module.get_submodule(se[1].target)]
        act = _skip_pass_through(gm, after)
        if not _is_relu(gm, act) or len(act.users) != 1:
            continue
        nxt = _skip_pass_through(gm, next(iter(act.users)))
        if not _is(gm, nxt, (nn.Conv2d, )) or calls[nxt.target] != 1:
            continue
        conv1, conv2 = gm.get_submodule(node.target), gm.get_submodule(
            nxt.target)
        if conv1.out_channels != conv2.in_channels:
            continue
        pairs.append(Pair(prefix + node.target,
                          module.get_submodule(node.target),
                          prefix + nxt.target,
                          module.get_submodule(nxt.target), through))
    return pairs


__all__ = [
    'Pair', 'relu_pairs', 'rescale_pair_', 'clear_input_channels_',
    'cle_scales', 'input_channel_ranges', 'output_channel_ranges',
    'outlier_ratio'
]
