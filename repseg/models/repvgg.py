# Copyright (c) repseg contributors. All rights reserved.
"""RepVGG backbone (Ding et al., "RepVGG: Making VGG-style ConvNets Great
Again", CVPR 2021) for mmsegmentation, with output-stride control for dense
prediction."""
import inspect
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import (ConvModule, build_activation_layer, build_conv_layer,
                      build_norm_layer)
from mmengine.model import BaseModule
from mmengine.registry import Registry
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg.registry import MODELS

from ..reparam.fusion import fuse_branches
from .arch import (ARCH_SETTINGS, DILATION_PRESETS, NUM_STAGES, Signature,
                   signature)
from .pretrained import load_pretrained
from .se import SELayer

#: RepVGG's block types by ``block_type`` name: a new block is a class with
#: ``switch_to_deploy()`` (and a one-line ``description``) registered here,
#: e.g. ``@REPVGG_BLOCKS.register_module(name='myblock')``
REPVGG_BLOCKS = Registry('RepVGG block')


def _takes_se(block: type) -> bool:
    """Whether a registered block class takes ``se_cfg``."""
    return 'se_cfg' in inspect.signature(block).parameters


def _se_blocks() -> list:
    """The registered blocks that take ``se_cfg``."""
    return sorted(n for n, b in REPVGG_BLOCKS.module_dict.items()
                  if _takes_se(b))


@REPVGG_BLOCKS.register_module(name='repvgg')
class RepVGGBlock(BaseModule):
    """The RepVGG block.

    Training-time form: ``act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))``; the
    identity branch exists only when ``in_channels == out_channels`` and
    ``stride == 1``. Inference-time form (``deploy=True`` or after
    :meth:`switch_to_deploy`): ``act(conv3x3(x) + bias)``. With ``se_cfg``
    a squeeze-and-excitation (:class:`~repseg.models.se.SELayer`) sits
    after the sum of the branches, before ``act``, in both forms (fusion
    folds the branches and leaves it as it is).

    Args:
        in_channels (int): Input channels C_in.
        out_channels (int): Output channels C_out.
        stride (int): Stride of the 3x3 and 1x1 convs. Default: 1.
        dilation (int): Dilation of the 3x3 conv (its padding equals the
            dilation, so the spatial size is that of the 1x1 branch).
            Default: 1.
        groups (int): Groups of the 3x3 and 1x1 convs. Default: 1.
        conv_cfg (dict, optional): Config of the conv layers. Default: None.
        norm_cfg (dict): Config of the norm layers. Default: dict(type='BN').
        act_cfg (dict): Config of the activation. Default: dict(type='ReLU').
        deploy (bool): Build the fused single-conv form directly.
            Default: False.
        with_cp (bool): Use activation checkpointing for the branches while
            training (saves memory at the cost of a second forward).
            Default: False.
        se_cfg (dict, optional): Squeeze-and-excitation after the branches
            (the arguments of :class:`~repseg.models.se.SELayer`, e.g.
            ``dict(ratio=16, divisor=1)``); None: none. Default: None.
        init_cfg (dict | list[dict], optional): Initialization config.

    Shape:
        x: (N, C_in, H, W) -> (N, C_out, floor((H - 1) / stride) + 1,
        floor((W - 1) / stride) + 1).
    """

    #: what ``block_type`` names it for (error messages, docs)
    description = "the paper's block"

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 dilation: int = 1,
                 groups: int = 1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 deploy: bool = False,
                 with_cp: bool = False,
                 se_cfg: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        self.conv_cfg = conv_cfg
        self.deploy = deploy
        self.with_cp = with_cp

        if deploy:
            self.branch_reparam = self._build_reparam_conv()
        else:
            self._build_training_branches(norm_cfg)
        self.se_cfg = se_cfg
        self.se_layer = SELayer(out_channels, **se_cfg) if se_cfg else None
        self.act = build_activation_layer(act_cfg)

    def _conv_bn(self, size: int, norm_cfg: dict) -> ConvModule:
        """A ``size`` x ``size`` conv (the block's stride and groups; the
        3x3 one dilated, padding = dilation) followed by BN."""
        dilation = self.dilation if size == 3 else 1
        return ConvModule(
            self.in_channels, self.out_channels, kernel_size=size,
            stride=self.stride, padding=dilation * (size // 2),
            dilation=dilation, groups=self.groups, conv_cfg=self.conv_cfg,
            norm_cfg=norm_cfg, act_cfg=None)

    def _build_training_branches(self, norm_cfg: dict) -> None:
        """conv3x3+BN, conv1x1+BN and (in == out, stride 1) an identity
        BN."""
        self.branch_3x3 = self._conv_bn(3, norm_cfg)
        self.branch_1x1 = self._conv_bn(1, norm_cfg)
        if self.in_channels == self.out_channels and self.stride == 1:
            self.branch_norm = build_norm_layer(norm_cfg,
                                                self.in_channels)[1]
        else:
            self.branch_norm = None

    def _fused_kernel_bias(self):
        """The float64 kernel and bias of the one conv the block fuses
        into (:func:`repseg.reparam.fusion.fuse_branches`)."""
        return fuse_branches(self.branch_3x3.conv, self.branch_3x3.norm,
                             self.branch_1x1.conv, self.branch_1x1.norm,
                             self.branch_norm)

    def _drop_training_branches(self) -> None:
        del self.branch_3x3, self.branch_1x1, self.branch_norm

    def _build_reparam_conv(self) -> nn.Module:
        """The single 3x3 conv (with bias) of the fused block."""
        return build_conv_layer(
            self.conv_cfg,
            self.in_channels,
            self.out_channels,
            kernel_size=3,
            stride=self.stride,
            padding=self.dilation,
            dilation=self.dilation,
            groups=self.groups,
            bias=True)

    def _branches(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.branch_reparam(x)
        out = self.branch_3x3(x) + self.branch_1x1(x)
        if self.branch_norm is not None:
            out = out + self.branch_norm(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad and not self.deploy:
            out = cp.checkpoint(self._branches, x, use_reentrant=False)
        else:
            out = self._branches(x)
        if self.se_layer is not None:
            out = self.se_layer(out)
        return self.act(out)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fuse the branches into ``branch_reparam`` in place.

        Uses the BN running statistics (eval semantics) whatever the module's
        mode. Calling it again on a fused block does nothing.
        """
        if self.deploy:
            return
        conv3 = self.branch_3x3.conv
        kernel, bias = self._fused_kernel_bias()
        fused = self._build_reparam_conv().to(
            device=conv3.weight.device, dtype=conv3.weight.dtype)
        fused.weight.copy_(kernel.to(conv3.weight.dtype))
        fused.bias.copy_(bias.to(conv3.weight.dtype))
        self._drop_training_branches()
        self.branch_reparam = fused
        self.deploy = True


@REPVGG_BLOCKS.register_module(name='qarepvgg')
class QARepVGGBlock(RepVGGBlock):
    """The quantization-friendly RepVGG block (QARepVGG; Chu et al., "Make
    RepVGG Greater Again: A Quantization-aware Approach", 2022).

    Training-time form: ``act(BN_post(BN(conv3x3(x)) + conv1x1(x) + x))``:
    BN on the 3x3 branch only, a plain 1x1 conv, a plain identity (only when
    ``in_channels == out_channels`` and ``stride == 1``) and one BN after
    the sum. No per-branch BN scales the centre tap differently from the
    others, so the fused kernel keeps INT8-friendly ranges; the post-sum BN
    scales whole output channels, which per-channel weight quantization
    absorbs. Fuses exactly, like :class:`RepVGGBlock`, into one 3x3 conv
    with bias (same arguments and fused form; train with plain L2 weight
    decay, as the paper requires).
    """

    description = 'the quantization-friendly block'

    def _build_training_branches(self, norm_cfg: dict) -> None:
        self.branch_3x3 = self._conv_bn(3, norm_cfg)
        self.branch_1x1 = build_conv_layer(
            self.conv_cfg, self.in_channels, self.out_channels,
            kernel_size=1, stride=self.stride, padding=0,
            groups=self.groups, bias=False)
        self.identity = (self.in_channels == self.out_channels
                         and self.stride == 1)
        self.post_norm = build_norm_layer(norm_cfg, self.out_channels)[1]

    def _branches(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.branch_reparam(x)
        out = self.branch_3x3(x) + self.branch_1x1(x)
        if self.identity:
            out = out + x
        return self.post_norm(out)

    def _fused_kernel_bias(self):
        return fuse_branches(self.branch_3x3.conv, self.branch_3x3.norm,
                             self.branch_1x1, identity=self.identity,
                             bn_post=self.post_norm)

    def _drop_training_branches(self) -> None:
        del self.branch_3x3, self.branch_1x1, self.post_norm


@MODELS.register_module()
class RepVGG(BaseModule):
    """RepVGG backbone for semantic segmentation.

    The network has five stages (indices 0..4 in ``out_indices``,
    ``strides``, ``dilations`` and ``frozen_stages``): stage 0 is the single
    stem layer, stages 1..4 hold ``num_blocks`` RepVGG blocks each. The first
    layer of every stage has the stage's stride.

    Args:
        arch (str | dict): One of ``RepVGG.arch_settings`` ('A0', 'A1', 'A2',
            'B0', 'B1', 'B1g2', 'B1g4', 'B2', 'B2g2', 'B2g4', 'B3', 'B3g2',
            'B3g4', 'D2se'), or a dict with ``num_blocks`` (4 ints: layers of
            stages 1..4), ``width_factor`` (4 floats: a, a, a, b of the
            paper), optional ``group_layers`` (dict mapping a 1-based layer
            index, the stem being layer 1, to its number of groups) and
            optional ``se_cfg``. 'D2se' (the official RepVGG-D2se: layers
            1, 8, 14, 24, 1, B2's widths) has squeeze-and-excitation in every
            block, the stem included.
        in_channels (int): Input image channels. Default: 3.
        dilation_mode (str): Output-stride preset.
            'none': strides (2, 2, 2, 2, 2), no dilation (output stride 32).
            'full': strides (2, 2, 2, 1, 1), dilations (1, 1, 1, 2, 4): every
            3x3 conv of the last two stages is dilated (output stride 8, as
            the dilated ResNets of PSPNet).
            'fast': output stride 8 like 'full', but only the last
            ``fast_dilated_layers`` layers of the network are dilated (the
            paper's "-fast" PSPNets: the last 4 layers of stage 3 and the
            layer of stage 4); the other layers of those stages use stride 1
            and dilation 1.
            Default: 'none'.
        strides (Sequence[int], optional): Per-stage strides (5 ints);
            overrides the preset of ``dilation_mode``. E.g. output stride 16:
            ``strides=(2, 2, 2, 2, 1), dilations=(1, 1, 1, 1, 2)``.
        dilations (Sequence[int], optional): Per-stage dilations (5 ints);
            overrides the preset of ``dilation_mode``.
        fast_dilated_layers (int): How many of the last layers keep their
            stage's dilation in 'fast' mode. Default: 5.
        out_indices (Sequence[int]): Stages whose outputs are returned.
            Default: (1, 2, 3, 4).
        frozen_stages (int): Stages 0..frozen_stages are frozen (no gradient,
            norm layers in eval mode); -1 freezes nothing. Default: -1.
        conv_cfg (dict, optional): Config of the conv layers. Default: None.
        norm_cfg (dict): Config of the norm layers, e.g. dict(type='BN') or
            dict(type='SyncBN', requires_grad=True). Default: dict(type='BN').
        act_cfg (dict): Config of the activation. Default: dict(type='ReLU').
        norm_eval (bool): Keep norm layers in eval mode while training
            (freezes the running statistics). Default: False.
        with_cp (bool): Activation checkpointing in every block.
            Default: False.
        deploy (bool): Build every block in its fused single-conv form, so a
            checkpoint converted by :func:`repseg.reparameterize_model` loads
            with ``strict=True``. Default: False.
        se_cfg (dict, optional): Squeeze-and-excitation in every block, the
            stem included, after the sum of the branches and before the
            ReLU (mmpretrain's convention: ``dict(ratio=16, divisor=1)``,
            the arguments of :class:`~repseg.models.se.SELayer`); pooled over
            the whole map for any H x W. Default: None, the arch's own
            (set by 'D2se', none for the others).
        block_type (str): 'repvgg' (the paper's block,
            :class:`RepVGGBlock`) or 'qarepvgg' (the quantization-friendly
            :class:`QARepVGGBlock`, for INT8 deployment). Both fuse into the
            same single-conv form. Default: 'repvgg'.
        pretrained (str, optional): mmseg's older convention, which
            ``EncoderDecoder`` passes on from ``model.pretrained``: the same
            as ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
            A ResNet checkpoint name is refused with what to set instead.
            Default: None.
        init_cfg (dict | list[dict], optional): Initialization config, e.g.
            ``dict(type='Pretrained', checkpoint=PATH)``.

    Shape:
        x: (N, in_channels, H, W) -> a tuple with, for each index i in
        ``out_indices``, a tensor (N, ``self.out_channels[i]``, H / s_i,
        W / s_i), s_i being the product of ``strides[:i + 1]`` (sizes round
        up as in a padded stride-2 conv).

    Example:
        >>> import torch
        >>> from repseg.models import RepVGG
        >>> m = RepVGG('A0', dilation_mode='full').eval()
        >>> [o.shape for o in m(torch.rand(1, 3, 64, 64))]
        [torch.Size([1, 48, 16, 16]), torch.Size([1, 96, 8, 8]),
         torch.Size([1, 192, 8, 8]), torch.Size([1, 1280, 8, 8])]
    """

    arch_settings = ARCH_SETTINGS
    dilation_presets = DILATION_PRESETS
    num_stages = NUM_STAGES

    def __init__(self,
                 arch: Union[str, dict] = 'A0',
                 in_channels: int = 3,
                 dilation_mode: str = 'none',
                 strides: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None,
                 fast_dilated_layers: int = 5,
                 out_indices: Sequence[int] = (1, 2, 3, 4),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 deploy: bool = False,
                 block_type: str = 'repvgg',
                 se_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 init_cfg=None,
                 **kwargs):
        if kwargs:
            import difflib
            own = [p for p in inspect.signature(RepVGG.__init__).parameters
                   if p not in ('self', 'kwargs')]
            close = {k: difflib.get_close_matches(k, own, 1, 0.75)
                     for k in sorted(kwargs)}
            typos = {k: v[0] for k, v in close.items() if v}
            if typos:
                raise TypeError(
                    'RepVGG has no argument ' + ', '.join(
                        f'{k!r} (did you mean {v!r}?)'
                        for k, v in typos.items())
                    + f'; its arguments are {", ".join(own)}.')
            raise TypeError(
                f'RepVGG got arguments it does not have: {sorted(kwargs)}. '
                'When a config inherits a ResNet backbone (e.g. mmseg\'s '
                '_base_/models/*_r50*.py), replace the whole backbone dict: '
                "backbone=dict(_delete_=True, type='RepVGG', arch=..., ...). "
                'See docs/configs_and_backbones.md, "Plugging RepVGG into '
                'any mmseg model".')
        init_cfg = self._pretrained_to_init_cfg(pretrained, init_cfg)
        super().__init__(init_cfg)
        if block_type not in REPVGG_BLOCKS:
            blocks = sorted(REPVGG_BLOCKS.module_dict)
            raise ValueError(
                f'Unknown block_type {block_type!r}; valid types are '
                f'{blocks} (' + ', '.join(
                    f'{b!r}: {REPVGG_BLOCKS.get(b).description}'
                    for b in blocks) + ').')
        self.block_type = block_type
        self.arch = self._parse_arch(arch)
        if se_cfg is not None and not isinstance(se_cfg, dict):
            raise TypeError(f'se_cfg must be a dict (e.g. dict(ratio=16, '
                            f'divisor=1)) or None, got {se_cfg!r}')
        self.se_cfg = dict(se_cfg if se_cfg is not None else
                           self.arch.get('se_cfg') or {}) or None
        if dilation_mode not in self.dilation_presets:
            raise ValueError(
                f'Unknown dilation_mode {dilation_mode!r}; valid modes are '
                f"{sorted(self.dilation_presets)} ('none': output stride 32, "
                "'full'/'fast': output stride 8).")
        preset_strides, preset_dilations = self.dilation_presets[dilation_mode]
        self.dilation_mode = dilation_mode
        self.strides = self._per_stage(
            'strides', preset_strides if strides is None else strides)
        self.dilations = self._per_stage(
            'dilations', preset_dilations if dilations is None else dilations)
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f'strides must be 1 or 2, got {self.strides}')
        out_indices = tuple(out_indices)
        bad = [i for i in out_indices
               if not isinstance(i, int) or not 0 <= i < self.num_stages]
        if bad or not out_indices:
            raise ValueError(
                f'out_indices {out_indices} must be a non-empty subset of '
                f'0..{self.num_stages - 1} (stage 0 is the stem, stage 4 the '
                f'last stage); invalid entries: {bad}')
        if not -1 <= frozen_stages < self.num_stages:
            raise ValueError(f'frozen_stages must lie in -1..'
                             f'{self.num_stages - 1}, got {frozen_stages}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.fast_dilated_layers = fast_dilated_layers
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.deploy = deploy

        num_blocks = (1, ) + tuple(self.arch['num_blocks'])
        widths = signature(self.arch)[1]
        self.out_channels = widths
        # One entry per layer: (stage, stride, dilation, groups).
        self.layer_layout = self._layer_layout(num_blocks)
        self.stage_names = ['stem'] + [
            f'stage_{i}' for i in range(1, self.num_stages)
        ]
        common = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg,
                      deploy=deploy, with_cp=with_cp)
        if self.se_cfg:   # a registered block without SE is built without
            block = REPVGG_BLOCKS.get(block_type)
            if not _takes_se(block):
                raise ValueError(
                    f'block_type {block_type!r} ({block.__name__}) takes no '
                    'se_cfg: use a block with squeeze-and-excitation '
                    f"({', '.join(repr(b) for b in _se_blocks())}) or "
                    'give the block an se_cfg argument')
            common['se_cfg'] = self.se_cfg
        self._make_stages(num_blocks, in_channels, common)
        self._freeze_stages()

    def _layer_layout(self, num_blocks: Tuple[int, ...]) -> list:
        """(stage, stride, dilation, groups) of every layer, the stem first:
        the first layer of a stage has its stride; in 'fast' mode only the
        last ``fast_dilated_layers`` layers keep their stage's dilation."""
        group_layers = self.arch.get('group_layers') or {}
        total = sum(num_blocks)
        layout, layer = [], 0
        for stage, n in enumerate(num_blocks):
            for j in range(n):
                layer += 1
                dilation = self.dilations[stage]
                if (self.dilation_mode == 'fast'
                        and layer <= total - self.fast_dilated_layers):
                    dilation = 1
                layout.append((stage, self.strides[stage] if j == 0 else 1,
                               dilation, group_layers.get(layer, 1)))
        return layout

    def _make_stages(self, num_blocks: Tuple[int, ...], in_channels: int,
                     common: dict) -> None:
        """One RepVGGBlock per entry of ``layer_layout``: the stem as a
        block, stages 1..4 as ``nn.Sequential``."""
        in_ch = in_channels
        layers = iter(self.layer_layout)
        for stage, n in enumerate(num_blocks):
            blocks = []
            for _ in range(n):
                _, stride, dilation, groups = next(layers)
                blocks.append(
                    REPVGG_BLOCKS.get(self.block_type)(
                        in_ch, self.out_channels[stage], stride=stride,
                        dilation=dilation, groups=groups, **common))
                in_ch = self.out_channels[stage]
            self.add_module(
                self.stage_names[stage],
                blocks[0] if stage == 0 else nn.Sequential(*blocks))

    @staticmethod
    def _pretrained_to_init_cfg(pretrained: Optional[str], init_cfg):
        """mmseg's ``model.pretrained=PATH`` convention (EncoderDecoder hands
        it to the backbone) as ``init_cfg=dict(type='Pretrained', ...)``."""
        if pretrained is None:
            return init_cfg
        if not isinstance(pretrained, str):
            raise TypeError(f'pretrained must be a path (str) or None, got '
                            f'{type(pretrained).__name__}')
        low = pretrained.lower()
        if 'resnet' in low or low.startswith(('open-mmlab://',
                                              'torchvision://')):
            raise ValueError(
                f'model.pretrained={pretrained!r} names ResNet weights (set '
                "by mmseg's ResNet base configs), which do not fit a RepVGG "
                'backbone. Set model.pretrained=None and, for ImageNet '
                'RepVGG weights, model.backbone.init_cfg=dict('
                "type='Pretrained', checkpoint='checkpoints/RepVGG-B2-"
                "train.pth') (see docs/configs_and_backbones.md, "
                '"Pretrained backbones").')
        if init_cfg is not None:
            raise ValueError(
                'give either pretrained or init_cfg to RepVGG, not both '
                f'(pretrained={pretrained!r}, init_cfg={init_cfg!r})')
        return dict(type='Pretrained', checkpoint=pretrained)

    def _layout_signature(self) -> Signature:
        return signature(self.arch, se=self.se_cfg is not None)

    def init_weights(self) -> None:
        """With ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` load
        ImageNet weights in any supported layout (official RepVGG, timm,
        mmpretrain, repseg; training-time or deploy; see
        :func:`repseg.models.pretrained.load_pretrained`); otherwise the
        usual mmengine initialization."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            load_pretrained(self, cfg['checkpoint'])
            self._is_init = True
            return
        super().init_weights()
        # the stages are nn.Sequential, which mmengine's init does not enter
        for m in self.modules():
            if isinstance(m, SELayer):
                m.reset_gate()

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise ValueError(
                    f'Unknown RepVGG arch {arch!r}; valid archs are '
                    f'{list(self.arch_settings)}, or a dict with '
                    'num_blocks, width_factor and optional group_layers and '
                    'se_cfg.')
            return dict(self.arch_settings[arch], name=arch)
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch)}')
        missing = {'num_blocks', 'width_factor'} - set(arch)
        unknown = set(arch) - {'num_blocks', 'width_factor', 'group_layers',
                               'se_cfg', 'name'}
        if missing or unknown:
            raise ValueError(
                'A custom arch dict needs num_blocks and width_factor (and '
                'optionally group_layers and se_cfg); missing '
                f'{sorted(missing)}, unknown {sorted(unknown)}.')
        for key in ('num_blocks', 'width_factor'):
            if len(arch[key]) != 4:
                raise ValueError(
                    f'arch[{key!r}] needs 4 entries (stages 1..4; the stem '
                    f'is always one layer), got {arch[key]}')
        return dict(arch, name=arch.get('name', 'custom'))

    def _per_stage(self, name: str, values: Sequence[int]) -> Tuple[int, ...]:
        values = tuple(values)
        if len(values) != self.num_stages:
            raise ValueError(f'{name} needs one entry per stage '
                             f'({self.num_stages}), got {values}')
        if any(not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f'{name} must be positive integers, got '
                             f'{values}')
        return values

    @property
    def output_stride(self) -> int:
        """Stride of the last stage's output relative to the input."""
        out = 1
        for s in self.strides:
            out *= s
        return out

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages + 1):
            stage = getattr(self, self.stage_names[i])
            stage.eval()
            for param in stage.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def switch_to_deploy(self) -> None:
        """Fuse every block in place: every submodule with
        ``switch_to_deploy()`` (the protocol
        :func:`repseg.reparameterize_model` uses too, whatever the block's
        class)."""
        for m in self.modules():
            if m is not self and callable(getattr(m, 'switch_to_deploy',
                                                  None)):
                m.switch_to_deploy()
        self.deploy = True

