# Copyright (c) repseg contributors. All rights reserved.
"""Layer types that let a config DESCRIBE a model whose conv-BN pairs were
folded by :func:`repseg.reparameterize_model`, for backbones that, unlike
the decode heads' ConvModules, cannot simply be built with ``norm_cfg=None``
(mmseg's ResNet builds a norm layer unconditionally and its convs without a
bias).

- ``conv_cfg=dict(type='ConvWithBias')``: an ``nn.Conv2d`` that always has a
  bias (the folded BN shift lives there);
- ``norm_cfg=dict(type='FoldedNorm')``: the identity, where the folded BN
  was (no parameters, no buffers).

With both, such a backbone's state dict has exactly the keys of its folded
form, so a fused checkpoint loads with ``strict=True`` into a model built by
stock mmseg from the deploy config that ``tools/convert.py`` writes.
"""
import torch.nn as nn
from mmengine.registry import MODELS


@MODELS.register_module()
class ConvWithBias(nn.Conv2d):
    """``nn.Conv2d`` with a bias whatever ``bias`` the builder asks for."""

    def __init__(self, *args, bias: bool = True, **kwargs):
        super().__init__(*args, bias=True, **kwargs)


@MODELS.register_module()
class FoldedNorm(nn.Identity):
    """The place of a BatchNorm folded into the conv before it: the
    identity. Accepts (and ignores) the arguments of a norm layer."""

    _abbr_ = 'bn'   # the attribute names of mmcv's builders stay the same

    def __init__(self, num_features: int = 0, *args, **kwargs):
        super().__init__()
        self.num_features = num_features
