# Copyright (c) repseg contributors. All rights reserved.
"""The RepVGG architectures (paper Tables 2 and 3), the output-stride
presets, and the signature of an arch (what a checkpoint must match): data
and pure functions that the backbone and the pretrained-weight loader
share."""
from typing import Dict, Optional, Tuple

from torch import Tensor

from ..errors import CheckpointError


def alternate_groups(groups: int, last_layer: int = 27) -> Dict[int, int]:
    """The paper's groupwise layout: ``groups`` on the 3rd, 5th, ... layer
    (1-based, the stem being the 1st layer)."""
    return {layer: groups for layer in range(3, last_layer + 1, 2)}


_A = dict(num_blocks=(2, 4, 14, 1))
_B = dict(num_blocks=(4, 6, 16, 1))

ARCH_SETTINGS = {
    'A0': dict(**_A, width_factor=(0.75, 0.75, 0.75, 2.5)),
    'A1': dict(**_A, width_factor=(1, 1, 1, 2.5)),
    'A2': dict(**_A, width_factor=(1.5, 1.5, 1.5, 2.75)),
    'B0': dict(**_B, width_factor=(1, 1, 1, 2.5)),
    'B1': dict(**_B, width_factor=(2, 2, 2, 4)),
    'B1g2': dict(**_B, width_factor=(2, 2, 2, 4),
                 group_layers=alternate_groups(2)),
    'B1g4': dict(**_B, width_factor=(2, 2, 2, 4),
                 group_layers=alternate_groups(4)),
    'B2': dict(**_B, width_factor=(2.5, 2.5, 2.5, 5)),
    'B2g2': dict(**_B, width_factor=(2.5, 2.5, 2.5, 5),
                 group_layers=alternate_groups(2)),
    'B2g4': dict(**_B, width_factor=(2.5, 2.5, 2.5, 5),
                 group_layers=alternate_groups(4)),
    'B3': dict(**_B, width_factor=(3, 3, 3, 5)),
    'B3g2': dict(**_B, width_factor=(3, 3, 3, 5),
                 group_layers=alternate_groups(2)),
    'B3g4': dict(**_B, width_factor=(3, 3, 3, 5),
                 group_layers=alternate_groups(4)),
    # the official code's create_RepVGG_D2se: B2's widths, deeper stages,
    # squeeze-and-excitation (out_channels // 16) in every block, the stem
    # included
    'D2se': dict(num_blocks=(8, 14, 24, 1), width_factor=(2.5, 2.5, 2.5, 5),
                 se_cfg=dict(ratio=16, divisor=1)),
}

DILATION_PRESETS = {
    'none': ((2, 2, 2, 2, 2), (1, 1, 1, 1, 1)),
    'full': ((2, 2, 2, 1, 1), (1, 1, 1, 2, 4)),
    'fast': ((2, 2, 2, 1, 1), (1, 1, 1, 2, 4)),
}

NUM_STAGES = 5


Signature = Tuple[tuple, tuple, dict, bool]


def signature(arch: dict, se: Optional[bool] = None) -> Signature:
    """(num_blocks, widths of the 5 stages, groupwise layers that exist,
    whether the blocks have squeeze-and-excitation) of an arch setting
    (``se``: the backbone's own choice, else the arch's ``se_cfg``): what a
    checkpoint must match."""
    num_blocks = tuple(arch['num_blocks'])
    a = arch['width_factor']
    widths = (min(64, int(64 * a[0])), int(64 * a[0]), int(128 * a[1]),
              int(256 * a[2]), int(512 * a[3]))
    total = 1 + sum(num_blocks)
    groups = {
        k: g
        for k, g in (arch.get('group_layers') or {}).items()
        if k <= total and g > 1
    }
    if se is None:
        se = bool(arch.get('se_cfg'))
    return num_blocks, widths, groups, bool(se)


def arch_name(sig: Signature) -> Optional[str]:
    """The name of the arch with this signature, or None."""
    for name, setting in ARCH_SETTINGS.items():
        if signature(setting) == sig:
            return name
    return None


def checkpoint_kind(state_dict: Dict[str, Tensor]) -> str:
    """'fused' for a state dict of fused RepVGG blocks (``branch_reparam``),
    else 'training'."""
    keys = list(state_dict)
    fused = any('.branch_reparam.' in k for k in keys)
    unfused = any('.branch_3x3.' in k for k in keys)
    if fused and unfused:
        raise CheckpointError(
            'the checkpoint mixes fused (branch_reparam) and training-time '
            '(branch_3x3) RepVGG blocks; it was not written by repseg.')
    return 'fused' if fused else 'training'
