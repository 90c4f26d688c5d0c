# Copyright (c) repseg contributors. All rights reserved.
from .fast_conv import (CONV_IMPLS, NNPACKConv2d, count_fast_convs, is_nnpack,
                        is_nnpack_eligible, kernel_transform_bytes,
                        nnpack_available, nnpack_conv3x3, nnpack_pays_off,
                        resolve_conv_impl, transform_kernels, use_fast_convs)

__all__ = [
    'CONV_IMPLS', 'NNPACKConv2d', 'count_fast_convs', 'is_nnpack',
    'is_nnpack_eligible', 'kernel_transform_bytes', 'nnpack_available',
    'nnpack_conv3x3', 'nnpack_pays_off', 'resolve_conv_impl',
    'transform_kernels', 'use_fast_convs'
]
