# Copyright (c) repseg contributors. All rights reserved.
"""What inference on one image needs besides the network, as plain data:
the config's test resize, the data preprocessor's normalization and colour
order, whole-image or sliding-window inference, the classes and their
palette, and the size a model file takes. Exported files carry it in their
record (``record['recipe']``, written at export:
:func:`repseg.deploy.record.recipe_of`); files exported before it run with
a config. Plain Python: no torch, no OpenMMLab package (:func:`config_recipe`
imports the training stack when called)."""
import dataclasses
from typing import List, Optional, Sequence, Tuple

from ..errors import UsageError


@dataclasses.dataclass
class Recipe:
    """How an image becomes the network's input and its logits a label map.

    Args:
        mean, std (list of 3 floats): per-channel normalization, in the
            channel order the network takes.
        bgr_to_rgb (bool): the network takes RGB (images are read BGR).
        scale (tuple or None): the test resize (mmseg's ``Resize(scale=(W,
            H))``); None: images keep their size.
        keep_ratio (bool): resize as large as fits ``scale`` keeping the
            aspect ratio (mmcv's ``imrescale``), else to ``scale`` exactly.
        mode (str): 'whole' (one forward per image) or 'slide' (windows of
            ``crop_size`` every ``stride``, logits averaged).
        crop_size, stride (tuple or None): (H, W) of the sliding window.
        size_divisor (int or None): the test-time padding of the data
            preprocessor (bottom / right, value ``pad_val``).
        pad_val (float): the padding value (of the normalized input).
        align_corners (bool): of the bilinear resize of the logits.
        classes (list of str), palette (list of [R, G, B]): the dataset's.
        input_size (tuple or None): (H, W) a model file takes (None: any).
    """
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    bgr_to_rgb: bool = False
    scale: Optional[Tuple[int, int]] = None
    keep_ratio: bool = True
    mode: str = 'whole'
    crop_size: Optional[Tuple[int, int]] = None
    stride: Optional[Tuple[int, int]] = None
    size_divisor: Optional[int] = None
    pad_val: float = 0.0
    align_corners: bool = False
    classes: List[str] = dataclasses.field(default_factory=list)
    palette: List[List[int]] = dataclasses.field(default_factory=list)
    input_size: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        for key in ('scale', 'crop_size', 'stride', 'input_size'):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, tuple(int(v) for v in value))
        if self.mode not in ('whole', 'slide'):
            raise UsageError(f"the test mode {self.mode!r} is neither "
                             "'whole' nor 'slide'")
        if self.mode == 'slide' and not (self.crop_size and self.stride):
            raise UsageError('sliding-window inference needs crop_size and '
                             'stride (the config\'s model.test_cfg)')

    @classmethod
    def from_dict(cls, d: dict) -> 'Recipe':
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in d.items()}


def rescale_size(w: int, h: int, scale: Tuple[int, int],
                 keep_ratio: bool = True) -> Tuple[int, int]:
    """(new W, new H) of an image of ``w`` x ``h`` under mmseg's test
    ``Resize(scale, keep_ratio)`` (mmcv's ``rescale_size``: as large as
    fits the long and the short edge of ``scale``, rounded half up)."""
    if not keep_ratio:
        return int(scale[0]), int(scale[1])
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def config_recipe(config: str, input_size) -> tuple:
    """The recipe of a config (the training stack is needed here: imported
    on use) and the loaded config."""
    from ..deploy.record import recipe_of
    from ..engine.config import load_cfg
    cfg = load_cfg(config)
    return Recipe.from_dict(recipe_of(cfg, input_size)), cfg


__all__ = ['Recipe', 'rescale_size', 'config_recipe']
