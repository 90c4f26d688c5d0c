# Copyright (c) repseg contributors. All rights reserved.
"""One image through the config's test pipeline, in numpy and OpenCV (no
torch): mmseg's test ``Resize`` (mmcv's rescale, bilinear), the data
preprocessor's colour order, normalization and padding, whole-image or
sliding-window inference (mmseg's window grid), the logits resized back to
the image's own size (bilinear) and their argmax.

``run(x)`` is the network: a normalized ``(1, 3, H, W)`` float32 array to
logits ``(1, C, H, W)`` (a :class:`~repseg.deploy.runtimes.RuntimeModel`,
or a PyTorch segmentor wrapped the same way). A file exported with a
dynamic H/W (``tools/export.py --dynamic-shape``) runs every input as it
is, exactly as the config computes it. A model file of a fixed size takes
only inputs of that size; an input of another size goes one documented way
(:func:`forward`: resized to the file's size, its logits resized back),
and the result says so."""
from typing import Callable, Optional, Tuple

import cv2
import numpy as np

from ..deploy.runtimes.resize import fixed_size_forward, resize_logits
from .recipe import Recipe, rescale_size

Run = Callable[[np.ndarray], np.ndarray]

#: how an input met a fixed-size model file: exactly, or resized to it
EXACT, RESIZED = 'exact', 'resized'


def prepare(img: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The normalized ``(1, 3, h, w)`` float32 input of a BGR uint8 image
    (``H x W x 3``): resized as the test pipeline does, colours converted
    and normalized as the data preprocessor does."""
    if recipe.scale is not None:
        h, w = img.shape[:2]
        size = rescale_size(w, h, recipe.scale, recipe.keep_ratio)
        if size != (w, h):
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    # plane by plane into the (1, 3, h, w) array: the same float32
    # arithmetic as (x - mean) / std on the HWC image, 6-9x faster than
    # converting, normalizing and transposing the whole image
    planes = cv2.split(img)
    if recipe.bgr_to_rgb:
        planes = planes[::-1]
    mean = np.asarray(recipe.mean, np.float32)
    std = np.asarray(recipe.std, np.float32)
    x = np.empty((1, len(planes)) + img.shape[:2], np.float32)
    for c, plane in enumerate(planes):
        np.subtract(plane, mean[c], out=x[0, c], dtype=np.float32)
        np.divide(x[0, c], std[c], out=x[0, c])
    return x


def _pad_to(x: np.ndarray, h: int, w: int, value: float) -> np.ndarray:
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph <= 0 and pw <= 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, max(ph, 0)), (0, max(pw, 0))),
                  constant_values=value)


def _grid(size: int, crop: int, stride: int):
    """mmseg's window starts and ends along one axis."""
    n = max(size - crop + stride - 1, 0) // stride + 1
    for i in range(n):
        end = min(i * stride + crop, size)
        yield max(end - crop, 0), end


def _windows(x: np.ndarray, run: Run, crop: Tuple[int, int],
             stride: Tuple[int, int], input_size: Optional[Tuple[int, int]]
             ) -> Tuple[np.ndarray, str]:
    """mmseg's ``slide_inference``: the logits of every window (crop
    ``crop`` every ``stride``) added up and divided by their count."""
    h, w = x.shape[-2:]
    total = count = None
    how = EXACT
    for y1, y2 in _grid(h, crop[0], stride[0]):
        for x1, x2 in _grid(w, crop[1], stride[1]):
            out, k = forward(x[..., y1:y2, x1:x2], run, input_size)
            how = k if k != EXACT else how
            if total is None:
                total = np.zeros((out.shape[1], h, w), np.float32)
                count = np.zeros((h, w), np.float32)
            total[:, y1:y2, x1:x2] += out[0]
            count[y1:y2, x1:x2] += 1
    return (total / count)[None], how


def forward(x: np.ndarray, run: Run, input_size: Optional[Tuple[int, int]]
            ) -> Tuple[np.ndarray, str]:
    """``run(x)`` for a model of any input size (``input_size`` None), or
    of the fixed size ``input_size`` (H, W): an input of that size runs as
    it is; one of another size is resized to it (bilinear) and its logits
    resized back. Returns the logits and :data:`EXACT` or :data:`RESIZED`.

    Resizing is the one way repseg handles a size a fixed-size file cannot
    take (a photo whose shape differs from the size the file was exported
    at, under a whole-image config): on random-weight PSPNets it agreed
    with the exact PyTorch path better than padding or windows of the
    file's size, but only approximately (docs/inference.md has the
    figures); a dynamic-H/W file (``input_size`` None) runs it exactly. The
    resize is :func:`repseg.deploy.runtimes.resize.fixed_size_forward`,
    the one quantize's mIoU of such a file runs too."""
    out, resized = fixed_size_forward(x, run, input_size)
    return out, RESIZED if resized else EXACT


def network_logits(x: np.ndarray, run: Run, recipe: Recipe
                   ) -> Tuple[np.ndarray, str]:
    """The logits ``(1, C, h, w)`` of a prepared input (:func:`prepare`),
    whole or in the config's sliding windows, at its own size."""
    h, w = x.shape[-2:]
    if recipe.size_divisor:
        d = recipe.size_divisor
        x = _pad_to(x, -(-h // d) * d, -(-w // d) * d, recipe.pad_val)
    if recipe.slide:
        out, how = _windows(x, run, recipe.crop_size, recipe.stride,
                            recipe.input_size)
    else:
        out, how = forward(x, run, recipe.input_size)
    return out[..., :h, :w], how


def logits_are_final(x: np.ndarray, img: np.ndarray,
                     recipe: Recipe) -> bool:
    """Whether the network's logits of ``x`` (the prepared ``img``) are the
    image's, as they are: a whole-image config, no test resize or padding,
    a model that takes that size (then the runtime's own class map is the
    label map)."""
    h, w = x.shape[-2:]
    d = recipe.size_divisor
    return (not recipe.slide and (h, w) == img.shape[:2]
            and (not d or (h % d == 0 and w % d == 0))
            and (recipe.input_size is None
                 or tuple(recipe.input_size) == (h, w)))


def segment(img: np.ndarray, run: Run, recipe: Recipe,
            labels: Optional[Run] = None
            ) -> Tuple[np.ndarray, Optional[np.ndarray], str]:
    """The label map (H x W, the image's own size, uint8 or uint16), the
    logits at that size ``(C, H, W)`` and how the input met the model
    (:data:`EXACT` / :data:`RESIZED`) of one BGR image. ``labels``: the
    network's own class map ``(1, H, W)`` (a runtime's argmax), used where
    the logits need no further work; the logits are then None."""
    x = prepare(img, recipe)
    if labels is not None and logits_are_final(x, img, recipe):
        lab = labels(x)[0]
        n = len(recipe.classes) or int(lab.max(initial=0)) + 1
        return lab.astype(np.uint8 if n <= 256 else np.uint16), None, EXACT
    logits, how = network_logits(x, run, recipe)
    logits = resize_logits(logits[0], img.shape[:2], recipe.align_corners)
    labels = logits.argmax(0)
    dtype = np.uint8 if logits.shape[0] <= 256 else np.uint16
    return labels.astype(dtype), logits, how


__all__ = ['prepare', 'forward', 'network_logits', 'resize_logits',
           'logits_are_final', 'segment', 'EXACT', 'RESIZED']
