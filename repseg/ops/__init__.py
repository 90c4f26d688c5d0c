# Copyright (c) repseg contributors. All rights reserved.
"""CPU operators: NNPACK Winograd 3x3 convolutions (:mod:`.nnpack_conv`)
and the CPU's vector ISA (:mod:`.cpu`).

"fast" names only the paper's dilation layout (``dilation_mode='fast'``);
the NNPACK path's former names ``use_fast_convs``, ``count_fast_convs`` and
``repseg.ops.fast_conv`` still work for one release, with a
DeprecationWarning. The NNPACK names are imported when first used: the ISA
label and the timing (:mod:`.cpu`, :mod:`.timing`) need no torch."""
import functools
import warnings

from .._lazy import lazy_names

_NAMES = {name: '.nnpack_conv' for name in (
    'CONV_IMPLS', 'NNPACKConv2d', 'count_nnpack_convs', 'is_nnpack',
    'is_nnpack_eligible', 'kernel_transform_bytes', 'nnpack_available',
    'nnpack_conv3x3', 'nnpack_pays_off', 'resolve_conv_impl',
    'transform_kernels', 'use_nnpack_convs')}
_getattr, __dir__ = lazy_names(__name__, _NAMES)


def deprecated_alias(func, old: str):
    """``func`` under its former name ``old``, warning on every call."""

    @functools.wraps(func)
    def alias(*args, **kwargs):
        warnings.warn(
            f'repseg.ops.{old} is deprecated (removed in the next release): '
            f'use repseg.ops.{func.__name__} ("fast" now names only the '
            "'fast' dilation layout)", DeprecationWarning, stacklevel=2)
        return func(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f'Deprecated name of :func:`{func.__name__}`.'
    return alias


_ALIASES = dict(use_fast_convs='use_nnpack_convs',
                count_fast_convs='count_nnpack_convs')


def __getattr__(name):
    if name in _ALIASES:
        value = deprecated_alias(_getattr(_ALIASES[name]), name)
        globals()[name] = value
        return value
    return _getattr(name)


__all__ = [
    'CONV_IMPLS', 'NNPACKConv2d', 'count_nnpack_convs', 'is_nnpack',
    'is_nnpack_eligible', 'kernel_transform_bytes', 'nnpack_available',
    'nnpack_conv3x3', 'nnpack_pays_off', 'resolve_conv_impl',
    'transform_kernels', 'use_nnpack_convs', 'use_fast_convs',
    'count_fast_convs'
]
