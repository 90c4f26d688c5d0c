# Copyright (c) repseg contributors. All rights reserved.
"""Whole-model structural re-parameterization, by protocol: any module that
offers ``switch_to_deploy()`` (and a ``deploy`` flag) is fused by calling
it, and every BatchNorm that directly follows a conv is folded into it.
Nothing here knows a particular block type."""
import copy
from typing import List, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule

from ..errors import NotFusedError
from .fusion import fold_conv_bn_, is_batchnorm

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


def is_reparameterizable(module: nn.Module) -> bool:
    """Whether ``module`` follows the re-parameterization protocol: a
    ``switch_to_deploy()`` method that turns it into its fused form."""
    return callable(getattr(module, 'switch_to_deploy', None))


def multi_branch_blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of the innermost re-parameterizable modules of
    ``model`` (the blocks, not the backbones that contain them) that are
    still in their training form (``deploy`` false)."""
    found = []
    for name, module in model.named_modules():
        if not is_reparameterizable(module) or getattr(module, 'deploy',
                                                       False):
            continue
        inner = any(is_reparameterizable(m)
                    for m in list(module.modules())[1:])
        if not inner:
            found.append((name, module))
    return found


def is_fused_form(model: nn.Module) -> bool:
    """Whether ``model`` has re-parameterizable parts and all of them are in
    their fused form (e.g. built from a deploy config)."""
    parts = [m for m in model.modules() if is_reparameterizable(m)]
    return bool(parts) and not multi_branch_blocks(model)


def find_unfused(model: nn.Module) -> List[str]:
    """Names of the modules that re-parameterization would still change:
    multi-branch blocks and foldable conv-BN pairs. Empty for a fully
    fused model."""
    names = {id(m): n for n, m in model.named_modules()}
    found = [name for name, _ in multi_branch_blocks(model)]
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

    Every module with a ``switch_to_deploy()`` method (e.g.
    :class:`~repseg.models.RepVGGBlock`: one 3x3 conv with bias) is switched
    to its fused form, and every BatchNorm (BN, SyncBN) that directly follows a
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
        if is_reparameterizable(module):
            module.switch_to_deploy()
    for conv, owner, bn_name in find_conv_bn_pairs(model):
        fold_conv_bn_(conv, getattr(owner, bn_name))
        setattr(owner, bn_name, nn.Identity())
    model.eval()
    return model


def assert_fused(model: nn.Module) -> None:
    """Raise :class:`~repseg.errors.NotFusedError` if a multi-branch block
    or a foldable conv-BN pair is left in ``model``."""
    left = find_unfused(model)
    if left:
        raise NotFusedError(
            f'the model is not fully fused: {len(left)} multi-branch blocks '
            f'or foldable BatchNorms remain (e.g. {left[:3]}); run '
            'repseg.reparameterize_model on it first')
