# Copyright (c) repseg contributors. All rights reserved.
"""The torch side of a runtime model: a :class:`~.runtimes.RuntimeModel`
(numpy in, numpy out) as a drop-in for a segmentor's ``encode_decode``
(torch tensors in and out), so that mmseg's test loop (whole or
sliding-window inference and its post-processing) runs around it."""
import copy
from typing import Optional

import numpy as np
import torch

from .runtimes import RuntimeModel, get_runtime, runtime_of_file
from .runtimes.resize import fixed_size_forward


class TorchForward:
    """``forward(inputs, batch_img_metas=None)``: a normalized image batch
    ``(N, 3, H, W)`` tensor to logits ``(N, num_classes, H, W)``, computed
    by ``model`` (a :class:`RuntimeModel`); ``info`` is the model's. A
    file of one input size (``info.input_size``) given another runs each
    input resized to its size and the logits back
    (:func:`~.runtimes.resize.fixed_size_forward`, the one resize
    :func:`repseg.infer.predict.forward` runs too); a file that takes any
    size runs every input as it is."""

    def __init__(self, model: RuntimeModel):
        self.model = model
        self.info = model.info
        size = getattr(model.info, 'input_size', None)
        self.size = tuple(int(s) for s in size) if size else None

    def __call__(self, inputs: torch.Tensor,
                 batch_img_metas=None) -> torch.Tensor:
        out, _ = fixed_size_forward(inputs.detach().float().cpu().numpy(),
                                    self.model, self.size)
        return torch.from_numpy(np.ascontiguousarray(out)).to(inputs.device)

    def __repr__(self) -> str:
        return f'TorchForward({self.model!r})'


def load_forward(path: str, precision: Optional[str] = None,
                 runtime: Optional[str] = None) -> TorchForward:
    """Load the model file ``path`` in its runtime (by its suffix, or
    ``runtime``) with as many threads as torch uses, as a
    :class:`TorchForward`."""
    rt = get_runtime(runtime) if runtime else runtime_of_file(path)
    return TorchForward(rt.load(path, precision,
                                threads=torch.get_num_threads()))


def with_forward(segmentor, forward):
    """A shallow copy of ``segmentor`` whose ``encode_decode`` is
    ``forward`` (a runtime model, not a module: the copy shares its
    submodules with ``segmentor``): mmseg's test loop runs around it."""
    m = copy.copy(segmentor)
    m.encode_decode = forward
    return m


__all__ = ['TorchForward', 'load_forward', 'with_forward']
