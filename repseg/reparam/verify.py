# Copyright (c) repseg contributors. All rights reserved.
"""The one equivalence report of repseg: how far a fused (or exported, or
re-implemented) model's outputs are from a reference's. The fused-eval
hook, convert, ONNX export and the benchmark all report these fields."""
from typing import Sequence, Union

import numpy as np
import torch

#: a fused model reproduces the reference to float32 rounding:
#: max |out - ref| <= REL_TOL * max |ref|
REL_TOL = 1e-4

Outputs = Union[torch.Tensor, np.ndarray, Sequence]


def _flat(x: Outputs) -> list:
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _flat(item)]
    return [torch.as_tensor(x).detach().float()]


def compare_outputs(ref: Outputs, out: Outputs) -> dict:
    """Compare logits ``out`` with the reference ``ref`` (tensors or arrays
    of shape (N, C, ...), or lists of them, e.g. one per image).

    Returns:
        dict: ``max_abs_diff`` (max |out - ref|), ``max_abs`` (max |ref|),
        ``relative`` (their ratio), ``argmax_agreement`` (fraction of
        positions whose argmax over C agrees) and ``ok`` (``relative <=
        REL_TOL``).
    """
    refs, outs = _flat(ref), _flat(out)
    if len(refs) != len(outs) or any(r.shape != o.shape
                                     for r, o in zip(refs, outs)):
        raise ValueError(
            'cannot compare outputs of different shapes: '
            f'{[tuple(r.shape) for r in refs]} vs '
            f'{[tuple(o.shape) for o in outs]}')
    diff = max((r - o).abs().max().item() for r, o in zip(refs, outs))
    top = max(r.abs().max().item() for r in refs)
    agree = sum((r.argmax(-3) == o.argmax(-3)).sum().item()
                for r, o in zip(refs, outs) if r.dim() >= 3)
    total = sum(r[..., 0, :, :].numel() if r.dim() >= 3 else 0
                for r in refs)
    relative = diff / max(top, 1e-12)
    return dict(max_abs_diff=diff, max_abs=top, relative=relative,
                argmax_agreement=agree / total if total else 1.0,
                ok=relative <= REL_TOL)


def describe(report: dict, what: str = 'difference') -> str:
    """One phrase for logs: max |``what``|, max |reference|, relative and
    argmax agreement."""
    return (f"max |{what}| {report['max_abs_diff']:.3g} (max |logit| "
            f"{report['max_abs']:.3g}, relative {report['relative']:.2g}), "
            f"argmax agreement {100 * report['argmax_agreement']:.4f}%")
