# Copyright (c) repseg contributors. All rights reserved.
"""What a deployed model file is, as one typed object: its
:class:`ModelRecord` (the model: config, backbone, decoder, classes; the
input size the file takes) with its inference :class:`Recipe` (how an
image becomes the network's input and its logits a label map).

The record is written into the file's metadata as JSON
(:meth:`ModelRecord.to_dict`; ONNX ``metadata_props``, OpenVINO
``rt_info`` under :data:`RECORD_KEY`) and read back here, in one place
(:func:`read_record`, by every runtime's ``load`` and ``read_info``). It is
built from a config by :func:`repseg.deploy.record.record_of`.

Schema (the record's ``schema`` key; :data:`SCHEMA` is the one written):

* 1 (no ``schema`` key): files of repseg before the key existed; the
  recipe repeated the input size (``recipe.input_size``), ignored on
  reading; keys the oldest files lack (``block_type``, ``recipe``, ...)
  load as None;
* 2: the input size once (the record's); the recipe's comes from it;
* 3: the recipe says ``slide`` (true or false) where it said ``mode``
  ('slide' or 'whole'; ``mode`` in repseg means latency or throughput
  only).

A record of a newer schema, or with a key this repseg does not know, is
refused with one line (upgrade repseg, or export the file again).
Plain Python: no numpy even, no torch, no OpenMMLab package."""
import dataclasses
import json
from typing import List, Optional, Sequence, Tuple

from ...errors import UsageError

#: metadata key under which a model file holds its record (ONNX
#: metadata_props, OpenVINO rt_info)
RECORD_KEY = 'repseg'
#: the record schema this repseg writes (and the newest it reads)
SCHEMA = 3
#: recipe keys written by schema 1 that schema 2 no longer writes
_SCHEMA1_RECIPE_ONLY = ('input_size', )


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
        slide (bool): windows of ``crop_size`` every ``stride``, logits
            averaged (mmseg's ``test_cfg.mode='slide'``); False: one
            forward per image (``'whole'``).
        crop_size, stride (tuple or None): (H, W) of the sliding window.
        size_divisor (int or None): the test-time padding of the data
            preprocessor (bottom / right, value ``pad_val``).
        pad_val (float): the padding value (of the normalized input).
        align_corners (bool): of the bilinear resize of the logits.
        classes (list of str), palette (list of [R, G, B]): the dataset's.
        input_size (tuple or None): (H, W) a model file takes (None: any).
            In a file's record it is the record's own ``input_size``
            (written once, not in the recipe).
    """
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    bgr_to_rgb: bool = False
    scale: Optional[Tuple[int, int]] = None
    keep_ratio: bool = True
    slide: bool = False
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
        if not isinstance(self.slide, bool):
            raise UsageError(f'slide={self.slide!r}: give True (sliding '
                             'windows) or False (whole images)')
        if self.slide and not (self.crop_size and self.stride):
            raise UsageError('sliding-window inference needs crop_size and '
                             'stride (the config\'s model.test_cfg)')

    @classmethod
    def from_dict(cls, d: dict) -> 'Recipe':
        """The recipe of plain data; a key that is no field is refused
        (:class:`UsageError`), never dropped."""
        unknown = sorted(set(d) - _names(cls))
        if unknown:
            raise UsageError(
                f'an inference recipe with keys repseg does not know '
                f'({", ".join(map(str, unknown))}): it was written by a '
                'newer repseg; upgrade repseg, or export the model again')
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in d.items()}


def _names(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


def _refuse(what: str) -> UsageError:
    from ...version import __version__
    return UsageError(f'this model file\'s record {what}, which repseg '
                      f'{__version__} (record schema {SCHEMA}) cannot read: '
                      'upgrade repseg, or export the model again with this '
                      'one')


@dataclasses.dataclass
class ModelRecord:
    """What a deployed model file is (read by :func:`read_record`, built
    from a config by :func:`repseg.deploy.record.record_of`).

    Args:
        schema (int): the record schema (:data:`SCHEMA` when written now).
        config (str or None): the config's file name.
        backbone (str or None): 'RepVGG-B1g2', 'ResNetV1c-50', ...
        block_type (str or None): the RepVGG block type ('repvgg',
            'qarepvgg'); None for other backbones and the oldest files.
        config_block_type (str or None): the config's block type where the
            fused checkpoint was trained with another (``block_type``).
        dilation_mode (str or None): the backbone's.
        decode_head (str or None): the decoder's type.
        num_classes (int or None), classes (list of str or None).
        input_size (tuple or None): (H, W) the file takes; None: any (a
            dynamic H/W). The one place the size is stored: the recipe's
            ``input_size`` is this one.
        recipe (Recipe or None): how inference runs; None in files of
            repseg before recipes were recorded (a config gives it).
        qat (dict or None): a file made by quantization-aware
            fine-tuning says so here (``checkpoint``, ``iterations``,
            ``lr``, ``schedule``, ``seed``, ...:
            :func:`repseg.deploy.record.qat_record`); None for every
            other file.
    """
    schema: int = SCHEMA
    config: Optional[str] = None
    backbone: Optional[str] = None
    block_type: Optional[str] = None
    config_block_type: Optional[str] = None
    dilation_mode: Optional[str] = None
    decode_head: Optional[str] = None
    num_classes: Optional[int] = None
    classes: Optional[List[str]] = None
    input_size: Optional[Tuple[int, int]] = None
    recipe: Optional[Recipe] = None
    qat: Optional[dict] = None

    def __post_init__(self):
        if self.input_size is not None:
            self.input_size = tuple(int(v) for v in self.input_size)
        if isinstance(self.recipe, dict):
            self.recipe = Recipe.from_dict(self.recipe)
        if self.recipe is not None and \
                self.recipe.input_size != self.input_size:
            self.recipe = dataclasses.replace(self.recipe,
                                              input_size=self.input_size)

    @classmethod
    def from_dict(cls, d: dict) -> 'ModelRecord':
        """The record of a file's metadata (any schema up to
        :data:`SCHEMA`; what an older one lacks loads as its default).
        A newer schema or a key this repseg does not know is refused with
        one line (:class:`UsageError`)."""
        d = dict(d)
        schema = d.pop('schema', 1)
        if isinstance(schema, bool) or not isinstance(schema, int) or \
                schema < 1:
            raise _refuse(f'has the schema {schema!r} (no schema number)')
        if schema > SCHEMA:
            raise _refuse(f'is of schema {schema}, written by a newer '
                          'repseg')
        unknown = sorted(set(d) - _names(cls))
        if unknown:
            raise _refuse('has keys it does not know '
                          f'({", ".join(map(str, unknown))})')
        recipe = d.pop('recipe', None)
        if recipe is not None:
            if not isinstance(recipe, dict):
                raise _refuse(f'has a recipe that is no mapping '
                              f'({recipe!r})')
            recipe = dict(recipe)
            if schema == 1:   # its own copy of the record's input size
                for key in _SCHEMA1_RECIPE_ONLY:
                    recipe.pop(key, None)
            if schema <= 2 and 'mode' in recipe:   # 'whole' or 'slide'
                mode = recipe.pop('mode')
                if mode not in ('whole', 'slide'):
                    raise _refuse(f'has the test mode {mode!r}, neither '
                                  "'whole' nor 'slide'")
                recipe['slide'] = mode == 'slide'
            unknown = sorted(set(recipe) - (_names(Recipe) - {'input_size'}))
            if unknown:
                raise _refuse('has recipe keys it does not know '
                              f'({", ".join(map(str, unknown))})')
            try:
                recipe = Recipe(**recipe)
            except (TypeError, ValueError) as e:
                raise _refuse(f'has a recipe repseg cannot use ({e})'
                              ) from None
        try:
            return cls(schema=schema, recipe=recipe, **d)
        except (TypeError, ValueError) as e:
            raise _refuse(f'has values repseg cannot use ({e})') from None

    def to_dict(self) -> dict:
        """The record as written into a file (JSON-ready; the input size
        once, not in the recipe)."""
        d = {f.name: getattr(self, f.name)
             for f in dataclasses.fields(self)}
        d['schema'] = SCHEMA
        d['input_size'] = list(self.input_size) if self.input_size else None
        if self.recipe is not None:
            recipe = self.recipe.to_dict()
            recipe.pop('input_size')
            d['recipe'] = recipe
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def read_record(text: Optional[str], path: str = ''
                ) -> Optional[ModelRecord]:
    """The :class:`ModelRecord` stored in the metadata of the model file
    ``path`` as JSON; None when the file has none (or foreign metadata: no
    JSON object). A record this repseg cannot read (a newer schema,
    unknown keys) is refused (:class:`UsageError` naming the file)."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    try:
        return ModelRecord.from_dict(record)
    except UsageError as e:
        if not path:
            raise
        message = str(e).replace("this model file's record",
                                 f"the record of {path!r}", 1)
        if message == str(e):
            message = f'{path!r}: {message}'
        raise UsageError(message) from None


__all__ = ['RECORD_KEY', 'SCHEMA', 'Recipe', 'ModelRecord', 'read_record']
