# Copyright (c) repseg contributors. All rights reserved.
"""What inference on one image needs besides the network, as plain data:
the config's test resize, the data preprocessor's normalization and colour
order, whole-image or sliding-window inference, the classes and their
palette, and the size a model file takes. Exported files carry it in their
record (``record.recipe``: :class:`Recipe` is defined with the record, in
:mod:`repseg.deploy.runtimes.record`, and written at export:
:func:`repseg.deploy.record.recipe_of`); files exported before it run with
a config. Plain Python: no torch, no OpenMMLab package (:func:`config_recipe`
imports the training stack when called)."""
from typing import Tuple

from ..deploy.runtimes.record import Recipe


def rescale_size(w: int, h: int, scale: Tuple[int, int],
                 keep_ratio: bool = True) -> Tuple[int, int]:
    """(new W, new H) of an image of ``w`` x ``h`` under mmseg's test
    ``Resize(scale, keep_ratio)`` (mmcv's ``rescale_size``: as large as
    fits the long and the short edge of ``scale``, rounded half up)."""
    if not keep_ratio:
        return int(scale[0]), int(scale[1])
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def exact_size(recipe: Recipe, w: int, h: int) -> Tuple[int, int]:
    """(H, W) of the network input the config's test resize (and the data
    preprocessor's padding to ``size_divisor``) makes of a ``w`` x ``h``
    image under a whole-image config (under a sliding-window one: of its
    windows, the crop or the smaller image): the size a fixed-size file
    must have to run that image exactly (a file exported with a dynamic
    H/W runs every size exactly)."""
    if recipe.scale is not None:
        w, h = rescale_size(w, h, recipe.scale, recipe.keep_ratio)
    d = recipe.size_divisor
    if d:
        h, w = -(-h // d) * d, -(-w // d) * d
    if recipe.slide:
        h, w = min(h, recipe.crop_size[0]), min(w, recipe.crop_size[1])
    return int(h), int(w)


def config_recipe(config: str, input_size) -> tuple:
    """The recipe of a config (the training stack is needed here: imported
    on use) and the loaded config."""
    from ..deploy.record import recipe_of
    from ..engine.config import load_cfg
    cfg = load_cfg(config)
    return recipe_of(cfg, input_size), cfg


__all__ = ['Recipe', 'rescale_size', 'exact_size', 'config_recipe']
