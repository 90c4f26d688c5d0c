# Copyright (c) repseg contributors. All rights reserved.
"""The one way repseg runs an input of another size than a fixed-size
model file takes (:func:`fixed_size_forward`): the normalized input resized
to the file's size (bilinear), its logits resized back (bilinear, as
``torch.nn.functional.interpolate(..., align_corners=False)``). Inference
(:func:`repseg.infer.predict.forward`) and the torch adapter of a runtime
model (:class:`repseg.deploy.forward.TorchForward`: quantize, test) both call
it. numpy and OpenCV (imported when used), no torch."""
from typing import Callable, Optional, Sequence, Tuple

import numpy as np


def _bilinear(hwc: np.ndarray, size: Tuple[int, int],
              align_corners: bool = False) -> np.ndarray:
    """An ``h x w x c`` float32 array resized to ``size`` (H, W)
    bilinearly, 128 channels at a time (OpenCV's limit is 512)."""
    import cv2
    h, w = hwc.shape[:2]
    H, W = size
    parts = []
    for i in range(0, hwc.shape[2], 128):
        part = np.ascontiguousarray(hwc[..., i:i + 128])
        if align_corners:
            ys = np.linspace(0, h - 1, H, dtype=np.float32) if H > 1 else \
                np.zeros(1, np.float32)
            xs = np.linspace(0, w - 1, W, dtype=np.float32) if W > 1 else \
                np.zeros(1, np.float32)
            mx, my = np.meshgrid(xs, ys)
            out = cv2.remap(part, mx, my, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        else:
            out = cv2.resize(part, (W, H), interpolation=cv2.INTER_LINEAR)
        parts.append(out.reshape(H, W, -1))
    return np.concatenate(parts, axis=-1)


def resize_logits(logits: np.ndarray, size: Tuple[int, int],
                  align_corners: bool = False) -> np.ndarray:
    """``(C, h, w)`` logits (or a normalized image) resized to
    ``size`` (H, W) bilinearly, as ``torch.nn.functional.interpolate``
    does (OpenCV, 128 channels at a time)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0))
    return _bilinear(hwc, tuple(size), align_corners).transpose(2, 0, 1)


def fixed_size_forward(x: np.ndarray, run: Callable[[np.ndarray],
                                                    np.ndarray],
                       input_size: Optional[Sequence[int]]
                       ) -> Tuple[np.ndarray, bool]:
    """``run(x)`` for a model of any input size (``input_size`` None) or of
    the fixed size ``input_size`` (H, W): a batch ``(N, 3, h, w)`` of that size
    runs as it is; one of another size is resized to it, image by image
    (bilinear), and the logits resized back to ``h x w``. Returns the
    logits ``(N, C, h, w)`` and whether the input was resized."""
    h, w = x.shape[-2:]
    if input_size is None or (h, w) == tuple(input_size):
        return run(x), False
    size = tuple(int(s) for s in input_size)
    resized = np.stack([resize_logits(image, size) for image in x])
    out = run(np.ascontiguousarray(resized, np.float32))
    return np.stack([resize_logits(o, (h, w)) for o in out]), True


__all__ = ['resize_logits', 'fixed_size_forward']
