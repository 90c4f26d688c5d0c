# Copyright (c) repseg contributors. All rights reserved.
"""Structural re-parameterization: the algebra (:mod:`.fusion`), the
whole-model walker (:mod:`.model`) and the one equivalence report
(:mod:`.verify`)."""
from .model import (assert_fused, copy_model, find_conv_bn_pairs,
                    find_unfused, is_fused_form, is_reparameterizable,
                    multi_branch_blocks, reparameterize_model)
from .verify import REL_TOL, compare_outputs, describe

__all__ = [
    'reparameterize_model', 'find_unfused', 'find_conv_bn_pairs',
    'assert_fused', 'copy_model', 'is_fused_form', 'is_reparameterizable',
    'multi_branch_blocks', 'compare_outputs', 'describe', 'REL_TOL'
]
