# Copyright (c) repseg contributors. All rights reserved.
"""Winograd 3x3 convolutions on the CPU through NNPACK.

A fused RepVGG is a plain stack of 3x3 convolutions, which is what the
Winograd algorithm makes cheap: F(6x6, 3x3) computes a 6x6 output tile with
64 multiplications instead of 324. On a GPU cuDNN picks Winograd by itself.
On the CPU PyTorch's default path (oneDNN) runs direct convolution on AVX2
machines, and PyTorch uses its bundled NNPACK Winograd kernels only for
batches of 16 or more without dilation. This module makes every eligible
3x3 convolution take NNPACK's single-image inference path:

- a batch and the sub-grids of a *dilated* convolution are laid out side by
  side in ONE zero-separated mosaic image (a dilated 3x3 conv on an image is
  an ordinary 3x3 conv on each of its ``d x d`` sub-sampled grids), so each
  layer transforms its kernel once and runs one Winograd call per group;
- grouped convolutions run one call per group on contiguous channel slices;
- NNPACK is called directly (:mod:`repseg.ops._nnpack`, ctypes) with one
  reused workspace; ``conv_impl='nnpack-precomputed'`` also keeps the
  Winograd transform of every kernel (64/9 times the memory of the 3x3
  weights) instead of transforming it on every call. Builds that do not
  export NNPACK's symbols fall back to ``torch._nnpack_spatial_convolution``.

The result equals ``F.conv2d`` up to fp32 rounding of the Winograd
transforms (relative error ~1e-5, see ``tests/ops/test_nnpack_conv.py``).
Only the forward of inference is replaced: with autograd recording, in
tracing / ONNX export / ``torch.compile``, on other devices or dtypes, and
for channels-last inputs the module is an ordinary ``nn.Conv2d``.

The swap is a runtime choice, like ``cudnn.benchmark``: parameters and
``state_dict`` keys are those of ``nn.Conv2d``, checkpoints are unchanged.
"""
import copy
import math
import weakref
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _nnpack

__all__ = [
    'CONV_IMPLS', 'NNPACKConv2d', 'nnpack_available', 'nnpack_conv3x3',
    'is_nnpack', 'is_nnpack_eligible', 'use_nnpack_convs', 'resolve_conv_impl',
    'count_nnpack_convs', 'kernel_transform_bytes', 'transform_kernels',
    'nnpack_pays_off', 'count_nnpack_runs'
]

#: values of the ``conv_impl`` options of the tools and hooks:
#: ``'nnpack'`` transforms the kernels on every call (no memory beyond the
#: model's), ``'nnpack-precomputed'`` keeps the Winograd transform of every
#: kernel (faster; 64/9 times the memory of the 3x3 weights), ``'native'``
#: is PyTorch's conv and ``'auto'`` is ``'nnpack'`` where it can run.
CONV_IMPLS = ('auto', 'nnpack', 'nnpack-precomputed', 'native')

# NNPACKConv2d -> (weight key, transformed kernels). Outside the module so
# that deepcopy / pickling / state_dict never carry the transforms.
_KERNEL_CACHE: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


#: Below these sizes NNPACK's fixed costs per call (the kernel transform,
#: unless kept, and the mosaic layout) make it slower than PyTorch's conv,
#: so :class:`NNPACKConv2d` runs PyTorch's conv there. Measured on a 2-core
#: AVX2 CPU: 512->512 at 24x24 is 0.97x native, at 48x48 2.3x; 96 ch at
#: 33x33 0.9x, at 65x65 1.6x; 32 ch at 90x90 0.9x, at 357x357 1.5x;
#: dilation 2 at 48x48 is 0.8x (256 ch) - 1.3x (512 ch); 64-channel groups
#: in a mosaic are slower at every size. The 713x713 PSPNets (90x90 maps)
#: are far above these sizes.
MIN_PIXELS = 48 * 48                  # N*H*W of an undilated batch-1 conv
MIN_MOSAIC_PIXELS = 64 * 64           # N*H*W of a batched or dilated conv
MIN_MOSAIC_GROUP_CHANNELS = 128       # input channels per group, mosaic


def nnpack_pays_off(shape: Tuple[int, ...], dilation: int,
                    in_channels_per_group: int) -> bool:
    """Whether NNPACK is expected to beat PyTorch's conv for an input of
    ``shape`` (N, C, H, W) (see :data:`MIN_PIXELS`)."""
    n, _, h, w = shape
    if n == 1 and dilation == 1:
        return h * w >= MIN_PIXELS
    return (n * h * w >= MIN_MOSAIC_PIXELS
            and in_channels_per_group >= MIN_MOSAIC_GROUP_CHANNELS)


def is_nnpack(conv_impl: str) -> bool:
    """Whether a resolved ``conv_impl`` is one of the NNPACK ones."""
    return conv_impl in ('nnpack', 'nnpack-precomputed')


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK and it runs on this CPU.

    Also initializes NNPACK (``_nnpack_spatial_convolution`` fails until
    ``torch._nnpack_available()`` has been called once)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):   # pragma: no cover
        return False


def _mosaic_shape(n: int, h: int, w: int, d: int) -> Tuple[int, int]:
    """(rows, cols) of the mosaic of ``n`` images cut into ``d x d`` grids
    of ``ceil(h/d) x ceil(w/d)``, each followed by one zero row/column."""
    sh, sw = math.ceil(h / d), math.ceil(w / d)
    return n * d * (sh + 1), d * (sw + 1)


def transform_kernels(weight: torch.Tensor,
                      groups: int = 1) -> Optional[List[torch.Tensor]]:
    """Winograd transforms of the ``groups`` kernels of a 3x3 conv weight
    (C_out, C_in / groups, 3, 3), for ``nnpack_conv3x3(kernels=...)``; None
    when the direct NNPACK binding is not available in this build.

    They take 64/9 times the memory of ``weight`` and do not depend on the
    image size."""
    lib = _nnpack.binding()
    if lib is None:
        return None
    og = weight.shape[0] // groups
    return [
        lib.transform_kernel(weight[i * og:(i + 1) * og])
        for i in range(groups)
    ]


def _winograd(m: torch.Tensor, weight: torch.Tensor,
              bias: Optional[torch.Tensor], groups: int,
              kernels: Optional[List[torch.Tensor]]) -> torch.Tensor:
    """3x3 conv, padding 1, of the single image ``m`` (1, C, H, W)."""
    c, o = m.shape[1], weight.shape[0]
    cg, og = c // groups, o // groups
    lib = _nnpack.binding()
    if lib is None:     # PyTorch's own entry point (transforms every call)
        return torch.cat([
            torch._nnpack_spatial_convolution(
                m[:, i * cg:(i + 1) * cg], weight[i * og:(i + 1) * og],
                None if bias is None else bias[i * og:(i + 1) * og],
                [1, 1], [1, 1]) for i in range(groups)
        ], 1) if groups > 1 else torch._nnpack_spatial_convolution(
            m, weight, bias, [1, 1], [1, 1])
    y = m.new_empty(1, o, m.shape[2], m.shape[3])
    bias = m.new_zeros(o) if bias is None else bias.detach().contiguous()
    weight = weight.detach()
    for i in range(groups):
        lib.conv(m[0, i * cg:(i + 1) * cg],
                 kernels[i] if kernels is not None else
                 weight[i * og:(i + 1) * og].contiguous(),
                 bias[i * og:(i + 1) * og], y[0, i * og:(i + 1) * og],
                 transformed=kernels is not None)
    return y


def nnpack_conv3x3(x: torch.Tensor,
                   weight: torch.Tensor,
                   bias: Optional[torch.Tensor] = None,
                   dilation: int = 1,
                   groups: int = 1,
                   kernels: Optional[List[torch.Tensor]] = None
                   ) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=1, padding=dilation,
    dilation=dilation, groups=groups)`` computed with NNPACK's Winograd
    inference kernels.

    Args:
        x (Tensor): (N, C_in, H, W) float32, CPU, NCHW-contiguous.
        weight (Tensor): (C_out, C_in / groups, 3, 3).
        bias (Tensor | None): (C_out,).
        dilation (int): dilation of the 3x3 kernel (= its padding).
        groups (int): channel groups.
        kernels (list[Tensor] | None): :func:`transform_kernels` of
            ``weight`` to reuse; None transforms the kernel in this call.

    Returns:
        Tensor: (N, C_out, H, W).
    """
    n, c, h, w = x.shape
    d = int(dilation)
    direct = n == 1 and d == 1
    if direct:
        m = x.contiguous()
    else:
        # One image holding every (image, row-phase, col-phase) sub-grid,
        # separated by zero rows/columns so that padding=1 on the mosaic is
        # the zero padding of each sub-grid.
        sh, sw = math.ceil(h / d), math.ceil(w / d)
        xp = F.pad(x, (0, sw * d - w, 0, sh * d - h))
        sub = xp.view(n, c, sh, d, sw, d).permute(1, 0, 3, 2, 5, 4)
        m = x.new_zeros(c, n, d, sh + 1, d, sw + 1)
        m[:, :, :, :sh, :, :sw] = sub
        m = m.view(1, c, n * d * (sh + 1), d * (sw + 1))
    y = _winograd(m, weight, bias, groups, kernels)
    if direct:
        return y
    o = y.shape[1]
    y = y.view(o, n, d, sh + 1, d, sw + 1)[:, :, :, :sh, :, :sw]
    y = y.permute(1, 0, 3, 2, 5, 4).reshape(n, o, sh * d, sw * d)
    return y[:, :, :h, :w].contiguous()


def is_nnpack_eligible(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 3x3, stride-1, 'same'-padded ``nn.Conv2d``
    (any dilation equal in both directions, any groups) — the convolutions
    :class:`NNPACKConv2d` computes with Winograd."""
    return (isinstance(conv, nn.Conv2d)
            and tuple(conv.kernel_size) == (3, 3)
            and tuple(conv.stride) == (1, 1)
            and conv.dilation[0] == conv.dilation[1]
            and tuple(conv.padding) == tuple(conv.dilation)
            and conv.padding_mode == 'zeros')


def _compiling() -> bool:
    compiler = getattr(torch, 'compiler', None)
    return bool(compiler is not None and compiler.is_compiling())


class NNPACKConv2d(nn.Conv2d):
    """``nn.Conv2d`` (3x3, stride 1, padding = dilation) whose CPU fp32
    inference forward is :func:`nnpack_conv3x3`.

    Made by :func:`use_nnpack_convs`, which switches the class of existing
    ``nn.Conv2d`` modules (see :meth:`convert_`); parameters, ``state_dict``,
    ``.to()``, training and export behave as ``nn.Conv2d``. Inputs too small
    for Winograd to pay off (:func:`nnpack_pays_off`) run ``nn.Conv2d``'s
    forward.
    """

    #: keep the Winograd transforms of the kernel between calls
    precompute: bool = False
    #: run PyTorch's conv on inputs too small for NNPACK to pay off
    #: (:func:`nnpack_pays_off`); False: NNPACK for every eligible input
    skip_small: bool = True
    #: forwards of this module that ran NNPACK / PyTorch's conv (see
    #: :func:`count_nnpack_runs`)
    nnpack_calls: int = 0
    native_calls: int = 0

    @classmethod
    def convert_(cls, conv: nn.Conv2d,
                 precompute: bool = False) -> 'NNPACKConv2d':
        """Turn ``conv`` itself into an :class:`NNPACKConv2d` (in place).

        ``precompute``: keep the Winograd transforms of its kernel (computed
        at the first call, redone when the weight changes) instead of
        transforming on every call."""
        if not is_nnpack_eligible(conv):
            raise ValueError(
                f'{conv} is not a 3x3 stride-1 conv with padding equal to its '
                'dilation; NNPACKConv2d cannot compute it')
        conv.__class__ = cls
        conv.precompute = precompute
        return conv

    def _kernels(self) -> Optional[List[torch.Tensor]]:
        w = self.weight
        key = (w.data_ptr(), w._version, tuple(w.shape), self.groups)
        cached = _KERNEL_CACHE.get(self)
        if cached is None or cached[0] != key:
            _KERNEL_CACHE.pop(self, None)     # free the old ones first
            cached = (key, transform_kernels(w, self.groups))
            _KERNEL_CACHE[self] = cached
        return cached[1]

    def _use_nnpack(self, x: torch.Tensor) -> bool:
        if x.device.type != 'cpu' or x.dtype != torch.float32 \
                or self.weight.dtype != torch.float32 or x.dim() != 4:
            return False
        if torch.is_grad_enabled() and (x.requires_grad
                                        or self.weight.requires_grad):
            return False
        if torch.jit.is_scripting() or torch.jit.is_tracing() or \
                torch.onnx.is_in_onnx_export() or _compiling():
            return False
        if self.skip_small and not nnpack_pays_off(
                x.shape, self.dilation[0], self.in_channels // self.groups):
            return False
        return x.is_contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_nnpack(x):
            self.nnpack_calls += 1
            return nnpack_conv3x3(
                x, self.weight, self.bias, self.dilation[0], self.groups,
                self._kernels() if self.precompute else None)
        self.native_calls += 1
        return super().forward(x)


def resolve_conv_impl(conv_impl: str, device='cpu',
                      dtype: torch.dtype = torch.float32) -> str:
    """Turn ``'auto'`` into ``'nnpack'`` (CPU, fp32, NNPACK usable) or
    ``'native'``; check explicit choices.

    Raises:
        ValueError: unknown ``conv_impl``, or ``'nnpack'`` where NNPACK
            cannot run (not CPU / fp32, or not in this PyTorch build).
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f'conv_impl must be one of {list(CONV_IMPLS)}, '
                         f'got {conv_impl!r}')
    usable = (torch.device(device).type == 'cpu' and dtype == torch.float32
              and nnpack_available())
    if conv_impl == 'auto':
        return 'nnpack' if usable else 'native'
    if is_nnpack(conv_impl) and not usable:
        raise ValueError(
            f"conv_impl={conv_impl!r} runs fp32 convolutions on the CPU with "
            'PyTorch\'s bundled NNPACK, which is not usable here (device '
            f'{device}, dtype {dtype}, NNPACK available: '
            f"{nnpack_available()}); use 'auto' or 'native'")
    return conv_impl


def use_nnpack_convs(model: nn.Module,
                   conv_impl: str = 'auto',
                   inplace: bool = False) -> nn.Module:
    """Make every eligible 3x3 conv of ``model`` run Winograd on the CPU.

    Apply it to a model after :func:`repseg.reparameterize_model` (it also
    works on unfused models and on any mmseg segmentor: the ResNet
    baselines' 3x3 convs and the decode heads' 3x3 convs get it too).

    Args:
        model (nn.Module): any module.
        conv_impl (str): ``'nnpack'`` (kernels transformed on every
            call), ``'nnpack-precomputed'`` (kernel transforms kept: faster,
            64/9 times the memory of the 3x3 weights), ``'native'`` (no change)
            or ``'auto'`` (``'nnpack'`` if :func:`nnpack_available`).
        inplace (bool): swap the convs of ``model`` itself instead of a
            deep copy. Default: False.

    Returns:
        nn.Module: the model in which each eligible ``nn.Conv2d`` is an
        :class:`NNPACKConv2d`.
    """
    impl = resolve_conv_impl(conv_impl)
    if not inplace:
        model = copy.deepcopy(model)
    if impl == 'native':
        return model
    for module in model.modules():
        if type(module) is nn.Conv2d and is_nnpack_eligible(module):
            NNPACKConv2d.convert_(
                module, precompute=impl == 'nnpack-precomputed')
    return model


def kernel_transform_bytes(model: nn.Module) -> int:
    """Memory (bytes) held by the kept kernel transforms of the
    :class:`NNPACKConv2d` modules of ``model`` (``'nnpack-precomputed'``;
    they exist after the first forward)."""
    total = 0
    for module in model.modules():
        entry = _KERNEL_CACHE.get(module)
        if entry is not None and entry[1] is not None:
            total += sum(t.numel() * t.element_size() for t in entry[1])
    return total


def count_nnpack_runs(model: nn.Module, reset: bool = False
                      ) -> Tuple[int, int, int]:
    """What actually ran in the :class:`NNPACKConv2d` modules of ``model``
    since they were made (or last reset): (modules that ran NNPACK at least
    once, NNPACK calls, calls that ran PyTorch's conv because the input was
    too small, see :func:`nnpack_pays_off`, or not eligible).
    ``reset`` sets the counts back to zero afterwards."""
    convs = [m for m in model.modules() if isinstance(m, NNPACKConv2d)]
    result = (sum(m.nnpack_calls > 0 for m in convs),
              sum(m.nnpack_calls for m in convs),
              sum(m.native_calls for m in convs))
    if reset:
        for m in convs:
            m.nnpack_calls = m.native_calls = 0
    return result


def count_nnpack_convs(model: nn.Module) -> Tuple[int, int]:
    """(NNPACK convs, all ``nn.Conv2d``) in ``model``."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return sum(isinstance(m, NNPACKConv2d) for m in convs), len(convs)
