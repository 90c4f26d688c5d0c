# Copyright (c) repseg contributors. All rights reserved.
"""Checkpoints into models: training or fused weights, strictly, with
the mismatch named (the safe reading itself is :mod:`repseg.fileio`)."""
from typing import Dict, Optional

import torch
from mmengine.runner.checkpoint import load_state_dict

from ..errors import CheckpointError
from ..fileio import (load_state_dict_file, read_checkpoint,  # noqa: F401
                      register_safe_globals, unwrap_state_dict)
from ..reparam import find_unfused, is_fused_form, reparameterize_model


def key_mismatch(own: Dict[str, torch.Tensor],
                 state_dict: Dict[str, torch.Tensor]) -> Optional[tuple]:
    """(missing, unexpected, other shape) key lists, or None if the keys
    and shapes fit exactly."""
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    resized = sorted(k for k in set(own) & set(state_dict)
                     if own[k].shape != state_dict[k].shape)
    return (missing, unexpected, resized) if (missing or unexpected
                                              or resized) else None


def load_any_checkpoint(model: torch.nn.Module, path: str,
                        logger='current', allow_unsafe: bool = False,
                        ckpt=None) -> str:
    """Load a training or a fused (deploy) checkpoint into ``model``, always
    with strict key checking.

    A checkpoint that fits the model as it is loads as it is. One that fits
    the model's re-parameterized form (:func:`repseg.reparameterize_model`)
    first turns ``model`` into that form, in place. Anything else is a
    :class:`~repseg.errors.CheckpointError` that names the mismatch.
    Returns the kind of weights loaded: 'training' (multi-branch / unfolded)
    or 'fused'. ``ckpt``: the file's content when already read
    (:func:`read_checkpoint`).
    """
    state_dict = load_state_dict_file(path, allow_unsafe) if ckpt is None \
        else unwrap_state_dict(ckpt, path)
    own = model.state_dict()
    bad = key_mismatch(own, state_dict)
    if bad is None:
        kind = 'training' if find_unfused(model) else 'fused'
    elif find_unfused(model) and key_mismatch(
            reparameterize_model(model).state_dict(), state_dict) is None:
        # a fused checkpoint into a training-time config: build the fused
        # structure first, then the keys match exactly
        reparameterize_model(model, inplace=True)
        kind, bad = 'fused', None
    elif is_fused_form(model) and len(state_dict) > len(own):
        raise CheckpointError(
            f'{path!r} does not fit the fused (deploy) model of this config:'
            f' it holds {len(state_dict)} weights, the model {len(own)}. It '
            'looks like a TRAINING checkpoint (multi-branch blocks), but the '
            'config builds a fused deploy model (e.g. '
            'model.backbone.deploy=True). Use the training config (without '
            'deploy=True): tools/test.py fuses it; or turn the checkpoint '
            'into a deploy checkpoint with tools/convert.py.')
    if bad is not None:
        missing, unexpected, resized = bad
        raise CheckpointError(
            f'{path!r} does not fit the model of this config: '
            f'{len(missing)} weights missing (e.g. {missing[:2]}), '
            f'{len(unexpected)} unexpected (e.g. {unexpected[:2]}), '
            f'{len(resized)} of another shape (e.g. {resized[:2]}). Is it a '
            'checkpoint of another arch or head? Use the config it was '
            'trained with.')
    load_state_dict(model, state_dict, strict=True, logger=logger)
    return kind
