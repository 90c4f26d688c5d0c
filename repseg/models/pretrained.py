# Copyright (c) repseg contributors. All rights reserved.
"""ImageNet-pretrained RepVGG weights from the common sources, detected by
their key layout and converted to repseg's names:

- the official RepVGG release, training-time (``stage0.rbr_dense.conv.*``,
  ``stage1.0.rbr_1x1.bn.*``, ``stage1.1.rbr_identity.*``, ``linear.*``) and
  deploy files (``stage0.rbr_reparam.*``);
- timm (``stem.conv_kxk.conv.*``, ``stages.0.1.identity.*``, ``head.fc.*``;
  deploy ``reparam_conv``), torch or safetensors files;
- mmpretrain (``backbone.stem.branch_3x3.conv.*``, ``branch_3x3.norm.*``,
  ``head.fc.*``; deploy ``branch_reparam``) inside mmengine's
  ``state_dict``/``meta`` wrapper;
- squeeze-and-excitation (RepVGG-D2se) in each source's names: the
  official ``se.down`` / ``se.up``, timm's ``attn.fc1`` / ``attn.fc2``,
  mmpretrain's ``se_layer.conv1.conv`` / ``se_layer.conv2.conv`` (repseg's
  own); in the fused files of all three the SE stays beside the fused conv;
- repseg itself (with or without a ``backbone.`` prefix);
- QARepVGG blocks in the layout of the QARepVGG authors' public code
  (YOLOv6's ``QARepVGGBlock``: ``rbr_dense.conv/bn``, a plain
  ``rbr_1x1.weight``, the post-sum ``bn``) on the official RepVGG stage
  names (``stage1.0.rbr_1x1.weight``, ``stage1.0.bn.*``), and repseg's own
  QARepVGG checkpoints (``post_norm``).

A file's block type and the backbone's need not match: a file of the other
block type is fused and placed so that the backbone starts as the same
function (see :func:`load_pretrained`).

The classifier is dropped. A file of another architecture is refused with
an error that names the architecture the file looks like.
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

from ..fileio import load_state_dict_file
from ..errors import CheckpointError
from ..reparam.fusion import is_batchnorm
from .arch import arch_name, checkpoint_kind

Tensor = torch.Tensor

# each source's module names -> repseg's (squeeze-and-excitation: the
# official SEBlock's down/up, timm's SEModule fc1/fc2, mmpretrain's SELayer
# conv1/conv2 as repseg; mmpretrain's conv-BN pairs name their BN 'norm')
_BRANCH = {
    'official': {'rbr_dense': 'branch_3x3', 'rbr_1x1': 'branch_1x1',
                 'rbr_identity': 'branch_norm',
                 'rbr_reparam': 'branch_reparam',
                 'se.down': 'se_layer.conv1.conv',
                 'se.up': 'se_layer.conv2.conv'},
    'timm': {'conv_kxk': 'branch_3x3', 'conv_1x1': 'branch_1x1',
             'identity': 'branch_norm', 'reparam_conv': 'branch_reparam',
             'attn.fc1': 'se_layer.conv1.conv',
             'attn.fc2': 'se_layer.conv2.conv'},
    'mmpretrain': {'branch_3x3.norm': 'branch_3x3.bn',
                   'branch_1x1.norm': 'branch_1x1.bn'},
}
_CLASSIFIER = re.compile(r'^(linear|head|fc|classifier)\.')


def _load_raw(path: str) -> Dict[str, Tensor]:
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as e:   # pragma: no cover - dependency declared
            raise CheckpointError(
                'reading .safetensors needs the safetensors package: pip '
                'install safetensors') from e
        try:
            return OrderedDict(load_file(path, device='cpu'))
        except Exception as e:  # noqa: B902
            raise CheckpointError(
                f'{path!r} is truncated or not a safetensors file ({e}).'
            ) from e
    return load_state_dict_file(path)


def detect_layout(state_dict: Dict[str, Tensor]) -> str:
    """'official', 'timm', 'mmpretrain' or 'repseg' from the key names."""
    keys = list(state_dict)
    if any(k.startswith('stage0.') for k in keys):
        return 'official'
    if any(k.startswith('stages.') or '.conv_kxk.' in k for k in keys):
        return 'timm'
    if any(k.startswith('backbone.stem.branch_') for k in keys) and any(
            k.startswith('head.') for k in keys):
        return 'mmpretrain'
    if any(re.match(r'^(backbone\.)?stem\.branch_', k) for k in keys):
        return 'repseg'
    raise CheckpointError(
        'the checkpoint holds no RepVGG weights in any known layout '
        '(official RepVGG, timm, mmpretrain or repseg); first keys: '
        f'{keys[:5]}')


def to_repseg_layout(state_dict: Dict[str, Tensor],
                     layout: Optional[str] = None
                     ) -> 'OrderedDict[str, Tensor]':
    """Rename a backbone state dict into repseg's ``RepVGG`` key names and
    drop the classifier."""
    layout = layout or detect_layout(state_dict)
    out = OrderedDict()
    for key, value in state_dict.items():
        if layout in ('mmpretrain', 'repseg') and key.startswith('backbone.'):
            key = key[len('backbone.'):]
        if _CLASSIFIER.match(key):
            continue
        if layout == 'official':
            key = re.sub(r'^stage0\.', 'stem.', key)
            key = re.sub(r'^stage(\d)\.', r'stage_\1.', key)
        elif layout == 'timm':
            if key.startswith('final_conv.'):
                continue
            key = re.sub(r'^stages\.(\d)\.',
                         lambda m: f'stage_{int(m.group(1)) + 1}.', key)
        for old, new in _BRANCH.get(layout, {}).items():
            key = key.replace(f'.{old}.', f'.{new}.')
        # QARepVGG (authors' layout): the BN after the sum sits on the block
        key = re.sub(r'^(stem|stage_\d\.\d+)\.bn\.', r'\1.post_norm.', key)
        out[key] = value
    return out


def block_type_of(state_dict: Dict[str, Tensor]) -> str:
    """'qarepvgg' for a repseg-layout state dict of QARepVGG blocks (a BN
    after the sum), else 'repvgg'."""
    return 'qarepvgg' if any('.post_norm.' in k for k in state_dict) \
        else 'repvgg'


def layout_of(state_dict: Dict[str, Tensor]
              ) -> Tuple[tuple, tuple, dict, bool]:
    """(num_blocks of stages 1..4, widths of the 5 stages, group_layers,
    squeeze-and-excitation or not) of a repseg-layout state dict, read from
    the 3x3 kernels and the SE keys."""
    kernels = {}
    for key, value in state_dict.items():
        m = re.match(
            r'^(stem|stage_(\d)\.(\d+))\.branch_(3x3\.conv|reparam)\.weight$',
            key)
        if m:
            stage = 0 if m.group(1) == 'stem' else int(m.group(2))
            block = 0 if stage == 0 else int(m.group(3))
            kernels[(stage, block)] = value.shape
    if (0, 0) not in kernels:
        raise CheckpointError('no RepVGG stem kernel in the checkpoint')
    num_blocks = tuple(
        1 + max([b for (s, b) in kernels if s == stage], default=-1)
        for stage in range(1, 5))
    widths = tuple(
        kernels[(stage, 0)][0] if (stage, 0) in kernels else 0
        for stage in range(5))
    groups, in_ch, layer = {}, 3, 0
    for stage, n in enumerate((1, ) + num_blocks):
        for b in range(n):
            layer += 1
            shape = kernels[(stage, b)]
            g = in_ch // shape[1]
            if g > 1:
                groups[layer] = g
            in_ch = shape[0]
    se = any('.se_layer.' in k for k in state_dict)
    return num_blocks, widths, groups, se


def arch_name_of(state_dict: Dict[str, Tensor]) -> str:
    """The RepVGG arch name a repseg-layout state dict matches, or a
    description of it."""
    num_blocks, widths, groups, se = layout_of(state_dict)
    name = arch_name((num_blocks, widths, groups, se))
    if name is not None:
        return name
    return (f'an unknown RepVGG (blocks {num_blocks}, widths {widths}, '
            f'groups {groups or "none"}, '
            f'{"with" if se else "without"} squeeze-and-excitation)')


def _fused_blocks(sd: Dict[str, Tensor]) -> list:
    """The names of the fused blocks of a fused state dict."""
    return sorted({k.rsplit('.branch_reparam.', 1)[0] for k in sd
                   if '.branch_reparam.' in k})


def _neutral_training_branches(model_sd, sd, prefix_of_block, eps):
    """For a fused block: the 3x3 branch carries the fused kernel and bias,
    every BN is neutral, the 1x1 branch and the identity BN contribute 0."""
    out = {}
    p = prefix_of_block
    kernel, bias = sd[f'{p}.branch_reparam.weight'], sd[
        f'{p}.branch_reparam.bias']
    c = kernel.shape[0]
    out[f'{p}.branch_3x3.conv.weight'] = kernel
    out[f'{p}.branch_3x3.bn.weight'] = torch.ones(c)
    out[f'{p}.branch_3x3.bn.bias'] = bias
    out[f'{p}.branch_3x3.bn.running_mean'] = torch.zeros(c)
    out[f'{p}.branch_3x3.bn.running_var'] = torch.full((c, ), 1 - eps)
    out[f'{p}.branch_1x1.conv.weight'] = torch.zeros(
        model_sd[f'{p}.branch_1x1.conv.weight'].shape)
    out[f'{p}.branch_1x1.bn.weight'] = torch.ones(c)
    out[f'{p}.branch_1x1.bn.bias'] = torch.zeros(c)
    out[f'{p}.branch_1x1.bn.running_mean'] = torch.zeros(c)
    out[f'{p}.branch_1x1.bn.running_var'] = torch.full((c, ), 1 - eps)
    if f'{p}.branch_norm.weight' in model_sd:
        out[f'{p}.branch_norm.weight'] = torch.zeros(c)
        out[f'{p}.branch_norm.bias'] = torch.zeros(c)
        out[f'{p}.branch_norm.running_mean'] = torch.zeros(c)
        out[f'{p}.branch_norm.running_var'] = torch.ones(c)
    for k in list(out):
        if k.endswith('running_mean'):
            out[k[:-len('running_mean')] + 'num_batches_tracked'] = \
                torch.tensor(0)
    return out


def _qarepvgg_from_fused(backbone, fused_sd: Dict[str, Tensor]
                         ) -> Dict[str, Tensor]:
    """Training-time QARepVGG weights that compute exactly the fused
    pretrained blocks (eval mode): each block's 3x3 branch holds the fused
    kernel minus the identity kernel (the identity branch adds ``x`` back)
    and its bias through a neutral BN, the 1x1 conv is zero and the post-sum
    BN is neutral (``running_var = 1 - eps`` with the model's own eps)."""
    from ..reparam.fusion import identity_kernel
    model_sd = backbone.state_dict()
    eps = next(m.eps for m in backbone.modules() if is_batchnorm(m))
    out = {}
    for p in _fused_blocks(fused_sd):
        kernel = fused_sd[f'{p}.branch_reparam.weight'].double()
        bias = fused_sd[f'{p}.branch_reparam.bias']
        c = kernel.shape[0]
        block = backbone.get_submodule(p)
        if block.identity:
            kernel = kernel - identity_kernel(c, block.groups)
        out[f'{p}.branch_3x3.conv.weight'] = kernel.float()
        out[f'{p}.branch_1x1.weight'] = torch.zeros(
            model_sd[f'{p}.branch_1x1.weight'].shape)
        for bn, shift in (('branch_3x3.bn', bias), ('post_norm',
                                                    torch.zeros(c))):
            out[f'{p}.{bn}.weight'] = torch.ones(c)
            out[f'{p}.{bn}.bias'] = shift.float()
            out[f'{p}.{bn}.running_mean'] = torch.zeros(c)
            out[f'{p}.{bn}.running_var'] = torch.full((c, ), 1 - eps)
            out[f'{p}.{bn}.num_batches_tracked'] = torch.tensor(0)
    return out


def load_pretrained(backbone, path: str, logger='current') -> str:
    """Load ImageNet-pretrained RepVGG weights from ``path`` (any supported
    layout) into ``backbone`` (training-time or deploy form). Returns a
    one-line description of what was loaded.

    - training-time file -> training backbone of the same block type
      (RepVGG or QARepVGG): loaded as is;
    - training-time file -> deploy backbone, or a training backbone of the
      other block type: fused on the fly, then as a deploy file;
    - deploy file -> deploy backbone: loaded as is;
    - deploy file -> training RepVGG backbone: the fused kernel and bias go
      into the 3x3 branch with a neutral BN, the 1x1 branch and the identity
      BN start at zero (the output is the pretrained one in eval mode; for
      fine-tuning, the extra branches start from zero instead of their
      pretrained values, and the 3x3 BN starts with neutral statistics);
    - deploy file -> training QARepVGG backbone: the fused kernel minus the
      identity in the 3x3 branch, the 1x1 conv zero, both BNs neutral.
    """
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import load_state_dict

    raw = _load_raw(path)
    layout = detect_layout(raw)
    sd = to_repseg_layout(raw, layout)
    found = arch_name_of(sd)
    expected = backbone.arch['name']
    if layout_of(sd) != backbone._layout_signature():
        raise CheckpointError(
            f'{path!r} holds {found} weights, but the backbone is RepVGG '
            f"{expected!r}: set the backbone's arch to match the file or "
            'use the file of the right arch.')
    fused_file = checkpoint_kind(sd) == 'fused'
    file_block = 'fused' if fused_file else block_type_of(sd)
    own_block = getattr(backbone, 'block_type', 'repvgg')
    file_kind = 'deploy' if fused_file else f'training-time {file_block}'
    how = []
    if not fused_file and (backbone.deploy or file_block != own_block):
        # a training backbone of the file's own block type, fused
        tmp = type(backbone)(backbone.arch if backbone.arch['name'] ==
                             'custom' else backbone.arch['name'],
                             block_type=file_block, deploy=False,
                             se_cfg=backbone.se_cfg)
        load_state_dict(tmp, sd, strict=True, logger=logger)
        tmp.switch_to_deploy()
        sd, fused_file = tmp.state_dict(), True
        how.append(f'training-time {file_block} blocks fused on load')
    se_keys = {k: v for k, v in sd.items() if '.se_layer.' in k}
    if fused_file and not backbone.deploy and own_block == 'qarepvgg':
        sd = dict(_qarepvgg_from_fused(backbone, sd), **se_keys)
        how.append('each fused block placed in the QARepVGG 3x3 branch '
                   '(minus the identity), 1x1 branch zero, BNs neutral: '
                   'the same function in eval mode')
    elif fused_file and not backbone.deploy:
        model_sd = backbone.state_dict()
        # a neutral BN has running_var = 1 - eps with the model's own eps
        eps = next(m.eps for m in backbone.modules() if is_batchnorm(m))
        converted = {}
        for p in _fused_blocks(sd):
            converted.update(
                _neutral_training_branches(model_sd, sd, p, eps))
        sd = dict(converted, **se_keys)
        how.append('fused weights placed in the 3x3 branches (neutral '
                   'others)')
    how = '; '.join(how) or 'loaded as is'
    load_state_dict(backbone, sd, strict=True, logger=logger)
    msg = (f'Loaded ImageNet-pretrained RepVGG-{found} from {path} '
           f'({layout} layout, {file_kind} file, classifier dropped; '
           f'{how}).')
    if logger is not None:
        print_log(msg, logger=logger)
    return msg


__all__ = [
    'detect_layout', 'to_repseg_layout', 'block_type_of', 'layout_of',
    'arch_name_of', 'load_pretrained'
]
