# Copyright (c) repseg contributors. All rights reserved.
"""Build a segmentor from a config (checked before anything runs), load a
training or fused checkpoint into it, and its fused form for deployment."""
import copy
import os.path as osp
import re
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import is_model_wrapper

from mmseg.registry import MODELS
from mmseg.utils import register_all_modules
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import adapt_to_device, without_pretrained
from ..errors import UsageError, opt
from ..reparam import assert_fused, reparameterize_model

#: the smallest input side the deploy and benchmark tools take
MIN_SIDE = 32


def build_segmentor(cfg: Config) -> torch.nn.Module:
    """Build ``cfg.model`` without any pretrained initialization (weights
    come from a checkpoint), after checking its heads' channels."""
    register_all_modules(init_default_scope=True)
    model = MODELS.build(without_pretrained(copy.deepcopy(cfg.model)))
    check_channels(model)
    return model


def _head_inputs(head) -> list:
    """(in_index, in_channels) pairs a decode head reads (DeepLabV3+'s
    low-level features: ``inputs[0]`` with ``c1_in_channels``)."""
    idx, ch = head.in_index, head.in_channels
    if isinstance(idx, int):
        pairs = [(idx, ch)]
    else:
        pairs = list(zip(idx, ch if isinstance(ch, (list, tuple)) else
                         [ch] * len(idx)))
    c1 = getattr(head, 'c1_bottleneck', None)
    if c1 is not None and hasattr(c1, 'conv'):
        pairs.append((0, c1.conv.in_channels))
    return pairs


def _heads(model) -> list:
    """(config path, head) of every decode and auxiliary head."""
    found = []
    for part in ('decode_head', 'auxiliary_head'):
        head = getattr(model, part, None)
        if isinstance(head, torch.nn.ModuleList):
            found += [(f'{part}[{i}]', h) for i, h in enumerate(head)]
        elif head is not None:
            found.append((part, head))
    return [(p, h) for p, h in found if hasattr(h, 'in_index')]


def check_channels(model: torch.nn.Module) -> None:
    """Refuse a segmentor whose heads (or neck) expect other channel numbers
    than its backbone gives, before the first forward fails deep inside a
    conv. Checks backbones that state their per-stage ``out_channels`` and
    ``out_indices`` (RepVGG); others are left to the forward."""
    if is_model_wrapper(model):
        model = model.module
    backbone = getattr(model, 'backbone', None)
    widths = getattr(backbone, 'out_channels', None)
    indices = getattr(backbone, 'out_indices', None)
    if not isinstance(widths, (list, tuple)) or indices is None:
        return
    feats = [widths[i] for i in indices]
    name = type(backbone).__name__
    arch = getattr(backbone, 'arch', {})
    if isinstance(arch, dict) and arch.get('name'):
        name += '-' + arch['name']
    where = (f'the backbone {name} gives {feats} channels (its outputs = '
             f'stages {tuple(indices)})')
    neck = getattr(model, 'neck', None)
    if neck is not None:
        want = getattr(neck, 'in_channels', None)
        if isinstance(want, (list, tuple)) and list(want) != feats[:len(
                want)]:
            raise UsageError(
                f'model.neck.in_channels is {list(want)} but {where}. Set '
                f'model.neck.in_channels={feats}.')
        return
    for part, head in _heads(model):
        bad = [(i, c) for i, c in _head_inputs(head)
               if not -len(feats) <= i < len(feats) or feats[i] != c]
        if bad:
            i, c = bad[0]
            got = feats[i] if -len(feats) <= i < len(feats) else 'nothing'
            raise UsageError(
                f'model.{part} expects {c} channels at backbone output '
                f'{i} (in_index {head.in_index}, in_channels '
                f'{head.in_channels}'
                + (', c1_in_channels for output 0'
                   if hasattr(head, 'c1_bottleneck') else '')
                + f') but {where}, so output {i} has {got}. Fix the '
                f'channels of model.{part} (docs/configs_and_backbones.md, '
                '"Plugging RepVGG into any mmseg model", has the channels of '
                'every arch).')


def check_model(cfg: Config) -> torch.nn.Module:
    """Build the model of ``cfg`` once before the Runner does (and dumps the
    whole config): a typo (an unknown arch or dilation mode, a ResNet
    argument left in a RepVGG backbone) or channels that do not match
    become one clear :class:`UsageError` instead of a traceback. Returns the
    model (without pretrained weights), e.g. to check a checkpoint
    against."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    try:
        model = MODELS.build(without_pretrained(copy.deepcopy(cfg.model)))
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f'the model of this config cannot be built: '
                         f'{_innermost(e)}') from None
    check_channels(model)
    return model


def _innermost(e: Exception) -> str:
    """The message of a registry build error without mmengine's chain of
    'class `X` in module: ' prefixes."""
    msg = str(e).strip()
    while True:
        m = re.match(r'^class `(\w+)` in [\w./\\-]+: (.*)$', msg, re.S)
        if not m:
            return msg
        msg = f'{m.group(1)}: {m.group(2)}' if not m.group(2).startswith(
            'class `') else m.group(2)


def build_fused(cfg: Config, checkpoint: Optional[str],
                allow_unsafe: bool = False) -> torch.nn.Module:
    """The fused segmentor of ``cfg`` with the weights of ``checkpoint``
    (training or fused; None: the model's own initialization), in eval
    mode."""
    cfg = adapt_to_device(cfg)
    model = build_segmentor(cfg)
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise UsageError(f'checkpoint {checkpoint!r} does not exist')
        load_any_checkpoint(model, checkpoint, allow_unsafe=allow_unsafe)
    fused = reparameterize_model(model, inplace=True)
    assert_fused(fused)
    return fused.eval()


def dataset_meta(cfg: Config) -> Optional[dict]:
    """``classes`` and ``palette`` of the config's test dataset (what mmseg
    keeps as ``dataset_meta`` in checkpoints and models), or None when the
    config names no dataset mmseg knows."""
    from mmseg.registry import DATASETS
    ds = (cfg.get('test_dataloader') or {}).get('dataset', {})
    try:
        meta = DATASETS.get(ds.get('type')).METAINFO
    except Exception:  # noqa: B902  (no dataset in the config)
        return None
    return dict(classes=list(meta['classes']),
                palette=[list(c) for c in meta['palette']])


def refuse_overwrite(paths: Sequence[str], force: bool = False) -> None:
    """Never overwrite a file the user has (a checkpoint, a model) unless
    ``force``."""
    for path in paths:
        if osp.exists(path) and not force:
            raise UsageError(
                f'{path!r} exists; pass {opt("force")} to overwrite it')


def check_input_size(input_size: Sequence[int]) -> tuple:
    """Validate an input size (H, W) (or one side) for the deploy and
    benchmark tools."""
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) == 1:
        input_size = input_size * 2
    if len(input_size) != 2 or min(input_size) < MIN_SIDE:
        raise UsageError(
            f'input size {input_size} is not supported: give H W (or one '
            f'side) of at least {MIN_SIDE} pixels, e.g. 713 713')
    return input_size


def takes_argument(type_name, arg: str) -> bool:
    """Whether the registered model class ``type_name`` has an ``arg``
    parameter (e.g. a backbone that builds its fused form with
    ``deploy=True``)."""
    import inspect
    cls = type_name if inspect.isclass(type_name) else MODELS.get(type_name)
    if cls is None:
        return False
    return arg in inspect.signature(cls.__init__).parameters


class SegForward(nn.Module):
    """``encode_decode`` of a segmentor as a plain ``forward(x)``: backbone,
    neck, decode head and the resize of the logits to the input size (what
    whole-image inference runs; no auxiliary head)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor
        # inference only; also keeps exporters that restore the wrapper's
        # mode (torch.onnx.export) from switching the segmentor to training
        self.eval()

    def forward(self, x):
        h, w = x.shape[-2:]
        meta = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))
                ] * x.shape[0]
        return self.segmentor.encode_decode(x, meta)


__all__ = [
    'build_segmentor', 'build_fused', 'check_channels', 'check_model',
    'dataset_meta',
    'check_input_size', 'SegForward', 'MIN_SIDE', 'refuse_overwrite',
    'takes_argument'
]
