# Copyright (c) repseg contributors. All rights reserved.
"""Safe checkpoint reading, below every room that reads checkpoint files
(pretrained weights in :mod:`repseg.models`, training and deploy
checkpoints in :mod:`repseg.engine`).

torch >= 2.6 loads with ``weights_only=True`` by default: only tensors,
containers and an allow-list of types can be unpickled, so a checkpoint
cannot run code just by being loaded. mmengine 0.10 checkpoints also hold a
few harmless non-tensor objects (its HistoryBuffer of logged scalars, numpy
arrays and scalars in ``meta``); :func:`register_safe_globals` adds exactly
those to torch's allow-list, so mmengine's own loading (``load_from``,
``--resume``) keeps working under ``weights_only=True``.
"""
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict

import numpy as np
import torch

from .errors import CheckpointError, opt


def _numpy_globals() -> list:
    out = [np.ndarray, np.dtype]
    core = getattr(np, '_core', None) or np.core
    out += [core.multiarray._reconstruct, core.multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        out += [
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType')
        ]
    return out


def _history_buffer_getstate(self) -> dict:
    # mmengine's own __getstate__ adds the class-wide dict of statistics
    # functions, which pickles as ``getattr(HistoryBuffer, 'min')``: a
    # ``getattr`` global that no safe loader may allow (it reaches any
    # attribute of any allowed class). __setstate__ restores the default
    # statistics when the entry is absent, so leaving it out loses nothing
    # but custom statistics registered by user code (re-registered when that
    # code is imported).
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def register_safe_globals() -> None:
    """Make mmengine checkpoints readable with
    ``torch.load(weights_only=True)``: allow-list the harmless non-tensor
    types mmengine stores (its HistoryBuffer of logged scalars, numpy arrays,
    dtypes and scalars) and make HistoryBuffer pickle without function
    references."""
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    torch.serialization.add_safe_globals([HistoryBuffer] + _numpy_globals())


def _not_a_checkpoint(path: str, e: Exception) -> str:
    reason = [ln for ln in str(e).splitlines() if ln.strip()]
    reason = reason[-1] if reason else ''
    m = re.search(r'Unsupported operand \S+', str(e))
    reason = m.group(0) if m else reason
    return (f'{path!r} is truncated or not a PyTorch checkpoint '
            f'({type(e).__name__}: {reason[:200]}). Download or convert it '
            'again.')


def _unsupported(e: Exception) -> str:
    m = re.search(r'Unsupported global: GLOBAL \S+', str(e))
    return m.group(0) if m else str(e).splitlines()[0]


def load_state_dict_file(path: str, allow_unsafe: bool = False
                         ) -> Dict[str, torch.Tensor]:
    """Read the model weights of a checkpoint file safely
    (:func:`read_checkpoint`, then :func:`unwrap_state_dict`: mmengine/torch
    wrappers such as ``state_dict`` or ``model`` unwrapped, a ``module.``
    prefix stripped)."""
    return unwrap_state_dict(read_checkpoint(path, allow_unsafe), path)


def read_checkpoint(path: str, allow_unsafe: bool = False):
    """The object a checkpoint file holds (weights and meta), read safely.

    Args:
        path (str): The checkpoint file.
        allow_unsafe (bool): Permit full unpickling (can execute code from
            the file) for files that need it. Default: False.

    Raises:
        CheckpointError: if the file is missing, truncated, not a
            checkpoint, or needs unsafe unpickling that was not allowed.
    """
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'unsupported global' not in str(e).lower():
            raise CheckpointError(_not_a_checkpoint(path, e)) from e
        if not allow_unsafe:
            raise CheckpointError(
                f'{path!r} contains Python objects that only full '
                'unpickling can read, and unpickling can run arbitrary code '
                'from the file. Only if you trust where it came from, pass '
                f'{opt("allow_unsafe")}, or '
                're-save just its weights with torch.save(state_dict).\n'
                f'torch said: {_unsupported(e)}') from e
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # noqa: B902  (any failure of a corrupt file)
        raise CheckpointError(_not_a_checkpoint(path, e)) from e
    return ckpt


def unwrap_state_dict(ckpt, path: str = '<checkpoint>'
                      ) -> 'OrderedDict[str, torch.Tensor]':
    """The weights inside a loaded checkpoint object."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not ckpt or not all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(
            f'{path!r} holds no state dict (a mapping of names to tensors); '
            'it is not a model checkpoint.')
    if all(k.startswith('module.') for k in ckpt):
        ckpt = {k[len('module.'):]: v for k, v in ckpt.items()}
    return OrderedDict(ckpt)


__all__ = ['register_safe_globals', 'read_checkpoint', 'load_state_dict_file',
           'unwrap_state_dict']
