# Copyright (c) repseg contributors. All rights reserved.
"""Whole-model structural re-parameterization."""
import copy
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule

from .fusion import fold_conv_bn_, is_batchnorm
from .models.repvgg import RepVGG, RepVGGBlock

# (conv, module owning the BN, attribute name of the BN in that module)
ConvBNPair = Tuple[nn.Conv2d, nn.Module, str]


def _resnet_block_types() -> tuple:
    """mmseg's ResNet classes whose forward applies ``conv{i}`` then
    ``norm{i}`` directly (imported lazily: mmseg is heavy)."""
    from mmseg.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
    return (BasicBlock, Bottleneck, ResNet)


def find_conv_bn_pairs(model: nn.Module) -> List[ConvBNPair]:
    """Find every BatchNorm that directly follows a plain conv and can
    therefore be folded into it.

    Recognized patterns:

    - an mmcv ``ConvModule`` whose ``norm`` comes after ``conv`` in its
      ``order`` (decode heads, auxiliary heads, necks);
    - consecutive ``Conv2d`` -> BN children of an ``nn.Sequential`` (e.g.
      the deep stem and the downsample branches of mmseg's ResNetV1c);
    - ``conv{i}`` / ``norm{i}`` pairs of mmseg's ResNet, BasicBlock and
      Bottleneck.

    Convs that are not ``nn.Conv2d`` (e.g. deformable convs) are skipped.
    """
    resnet_types = _resnet_block_types()
    pairs: List[ConvBNPair] = []
    seen = set()

    def add(conv, owner, name):
        bn = getattr(owner, name)
        if (isinstance(conv, nn.Conv2d) and is_batchnorm(bn)
                and id(bn) not in seen
                and bn.num_features == conv.out_channels):
            seen.add(id(bn))
            pairs.append((conv, owner, name))

    for module in model.modules():
        if isinstance(module, ConvModule) and module.with_norm:
            order = list(module.order)
            if order.index('conv') < order.index('norm'):
                add(module.conv, module, module.norm_name)
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for prev, cur in zip(names, names[1:]):
                add(module._modules[prev], module, cur)
        if isinstance(module, resnet_types):
            for i in (1, 2, 3):
                norm_name = getattr(module, f'norm{i}_name', None)
                conv = getattr(module, f'conv{i}', None)
                if norm_name is not None and conv is not None:
                    add(conv, module, norm_name)
    return pairs


def find_unfused(model: nn.Module) -> List[str]:
    """Names of the modules that re-parameterization would still change:
    multi-branch RepVGG blocks and foldable conv-BN pairs. Empty for a fully
    fused model."""
    names = {id(m): n for n, m in model.named_modules()}
    found = [
        names[id(m)] for m in model.modules()
        if isinstance(m, RepVGGBlock) and not m.deploy
    ]
    found += [
        f'{names[id(owner)]}.{bn_name}'.lstrip('.')
        for _, owner, bn_name in find_conv_bn_pairs(model)
    ]
    return found


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` of a model that shares, rather than copies, the
    process groups its modules hold (mmcv's MMSyncBN keeps one, and process
    groups cannot be copied)."""
    memo = {}
    try:
        from torch.distributed import ProcessGroup
    except ImportError:   # pragma: no cover - torch without distributed
        ProcessGroup = ()
    for module in model.modules():
        for value in vars(module).values():
            if ProcessGroup and isinstance(value, ProcessGroup):
                memo[id(value)] = value
    return copy.deepcopy(model, memo)


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Convert a trained model to its fast inference form.

    Every :class:`~repseg.models.RepVGGBlock` is fused into a single 3x3
    conv with bias, and every BatchNorm (BN, SyncBN) that directly follows a
    conv (see :func:`find_conv_bn_pairs`) is folded into that conv and
    replaced by ``nn.Identity``. Works on any module: a backbone, a whole
    mmseg segmentor (decode and auxiliary heads included), or the ResNet
    baselines.

    The fusion always uses the BN *running statistics*, i.e. the result
    reproduces the model's eval-mode outputs even if ``model`` is in train
    mode when converted (train-mode BN normalizes with batch statistics,
    which no fixed conv can reproduce).

    Args:
        model (nn.Module): The model to convert.
        inplace (bool): Convert ``model`` itself instead of a deep copy.
            Default: False.

    Returns:
        nn.Module: The converted model (a copy unless ``inplace``), in eval
        mode.
    """
    if not inplace:
        model = copy_model(model)
    for module in list(model.modules()):
        if isinstance(module, (RepVGG, RepVGGBlock)):
            module.switch_to_deploy()
    for conv, owner, bn_name in find_conv_bn_pairs(model):
        fold_conv_bn_(conv, getattr(owner, bn_name))
        setattr(owner, bn_name, nn.Identity())
    model.eval()
    return model
