# Copyright (c) repseg contributors. All rights reserved.
"""CPU operators: NNPACK Winograd 3x3 convolutions (:mod:`.nnpack_conv`)
and the CPU's vector ISA (:mod:`.cpu`).

"fast" names only the paper's dilation layout (``dilation_mode='fast'``).
The NNPACK names are imported when first used: the ISA label and the
timing (:mod:`.cpu`, :mod:`.timing`) need no torch."""
from .._lazy import lazy_names

_NAMES = {name: '.nnpack_conv' for name in (
    'CONV_IMPLS', 'NNPACKConv2d', 'count_nnpack_convs', 'is_nnpack',
    'is_nnpack_eligible', 'kernel_transform_bytes', 'nnpack_available',
    'nnpack_conv3x3', 'nnpack_pays_off', 'resolve_conv_impl',
    'transform_kernels', 'use_nnpack_convs')}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
