# Copyright (c) repseg contributors. All rights reserved.
"""What an exported model file is: the config, model (backbone, arch,
decoder, classes), input size and inference recipe it was exported for,
built from a config (:func:`record_of`, :func:`recipe_of`) as the typed
:class:`~.runtimes.record.ModelRecord` (defined, versioned and read in the
runtime layer: :mod:`repseg.deploy.runtimes.record`). The record is
written into the file itself (ONNX ``metadata_props``, OpenVINO
``rt_info``; the runtimes carry it through quantization) and into its
``.json`` description, and read back when a file is evaluated with a
config: a file that does not belong to the config, or was exported at
another size than the config's test loop runs, is refused with one line
naming both."""
import copy
import dataclasses
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config

from ..errors import UsageError, opt
from .build import dataset_meta
from .runtimes.base import RECORD_KEY, RunInfo
from .runtimes.record import SCHEMA, ModelRecord, Recipe

#: the fields that say which model a file is (not how it was exported)
IDENTITY = ('backbone', 'decode_head', 'num_classes')


def _backbone_name(backbone: dict) -> str:
    """'RepVGG-B1g2', 'ResNetV1c-50', ... from a backbone config."""
    kind = backbone.get('type')
    kind = getattr(kind, '__name__', kind)
    arch = backbone.get('arch', backbone.get('depth'))
    if isinstance(arch, dict):
        arch = arch.get('name')
    return f'{kind}-{arch}' if arch is not None else str(kind)


def block_type(cfg: Config) -> Optional[str]:
    """The backbone's ``block_type`` ('repvgg', 'qarepvgg') where it has
    one."""
    backbone = cfg.model.get('backbone') or {}
    kind = getattr(backbone.get('type'), '__name__', backbone.get('type'))
    return backbone.get('block_type', 'repvgg') if kind == 'RepVGG' \
        else None


def checkpoint_block_type(record: ModelRecord, checkpoint: Optional[str]
                          ) -> ModelRecord:
    """``record`` with the block type the fused ``checkpoint`` says it was
    trained with (its ``meta.block_type``, written by tools/convert.py)
    where the config names another: the fused forms of RepVGG and QARepVGG
    blocks are the same network (one 3x3 conv with bias), so such a file
    is what the checkpoint is, whatever config built it."""
    if not checkpoint or record.block_type is None:
        return record
    from ..fileio import read_checkpoint
    try:
        meta = (read_checkpoint(checkpoint) or {}).get('meta') or {}
    except Exception:  # noqa: B902  (read strictly elsewhere already)
        return record
    trained = meta.get('block_type') if isinstance(meta, dict) else None
    if trained and trained != record.block_type:
        record = dataclasses.replace(record, block_type=trained,
                                     config_block_type=record.block_type)
    return record


def _head(cfg: Config) -> dict:
    head = cfg.model.get('decode_head') or {}
    return head[-1] if isinstance(head, (list, tuple)) else head


def config_input_size(cfg: Config, settable: bool = True) -> tuple:
    """(H, W) of every forward the config's test loop runs: the sliding
    window of a 'slide' config, else the size of its first test image after
    the test pipeline and the data preprocessor (reads that image).
    ``settable``: the caller can take the size as a setting instead (the
    error then says so)."""
    test_cfg = cfg.model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        return tuple(int(s) for s in test_cfg['crop_size'])
    from mmseg.registry import DATASETS, MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    try:
        sample = DATASETS.build(copy.deepcopy(
            cfg.test_dataloader['dataset']))[0]
    except Exception as e:  # noqa: B902  (any dataset or pipeline error)
        first = (str(e).strip().splitlines() or [''])[0][:200]
        hint = ''
        if 'list' in first and 'tuple' in first:
            hint = (' A list where mmseg wants a tuple: on the command line '
                    "write a tuple in quotes, e.g. --cfg-options "
                    "test_dataloader.dataset.pipeline.1.scale='(512,256)'.")
        raise UsageError(
            'the test loop of this config runs whole images at the size its '
            'test pipeline gives them, but the pipeline failed on the first '
            f'test image ({type(e).__name__}: {first}).{hint}'
            + (f' Or give the size with {opt("input_size", None)} H W.'
               if settable else ' Fix the test pipeline or the data.')
        ) from None
    pre = MODELS.build(copy.deepcopy(cfg.model['data_preprocessor']))
    data = pre(dict(inputs=[sample['inputs']],
                    data_samples=[sample['data_samples']]), False)
    return tuple(int(s) for s in data['inputs'].shape[-2:])


def _test_resize(cfg: Config) -> dict:
    """``scale`` and ``keep_ratio`` of the test pipeline's resize (none:
    images keep their size)."""
    pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get(
        'pipeline') or cfg.get('test_pipeline') or []
    for step in pipeline:
        kind = getattr(step.get('type'), '__name__', step.get('type'))
        if kind in ('Resize', 'RandomResize') and step.get('scale'):
            return dict(scale=[int(v) for v in step['scale']],
                        keep_ratio=bool(step.get('keep_ratio', False)))
        if kind in ('Resize', 'RandomResize'):
            raise UsageError(
                f'the test pipeline resizes by {kind}({dict(step)}), which '
                'repseg\'s inference does not reproduce: give the test '
                "Resize a scale=(W, H) (mmseg's usual test pipeline)")
    return dict(scale=None, keep_ratio=True)


def recipe_of(cfg: Config, input_size: Optional[Sequence[int]] = None
              ) -> Recipe:
    """Everything inference needs besides the network, from the config
    (a :class:`~.runtimes.record.Recipe`): the test resize,
    the normalization and colour order, whole or slide mode with crop and
    stride, the test-time padding, the classes and palette, and the input
    size of the file (None: any)."""
    pre = cfg.model.get('data_preprocessor') or {}
    test_cfg = cfg.model.get('test_cfg') or {}
    pad = pre.get('test_cfg') or {}
    meta = dataset_meta(cfg) or {}
    slide = test_cfg.get('mode') == 'slide'
    return Recipe(
        mean=[float(v) for v in pre.get('mean', [0, 0, 0])],
        std=[float(v) for v in pre.get('std', [1, 1, 1])],
        bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)
                        or pre.get('rgb_to_bgr', False)),
        **_test_resize(cfg),
        slide=slide,
        crop_size=[int(v) for v in test_cfg['crop_size']] if slide else None,
        stride=[int(v) for v in test_cfg['stride']] if slide else None,
        size_divisor=pad.get('size_divisor'),
        pad_val=float(pre.get('pad_val', 0)),
        align_corners=bool(_head(cfg).get('align_corners', False)),
        classes=list(meta.get('classes') or []),
        palette=[list(c) for c in meta.get('palette') or []],
        input_size=[int(s) for s in input_size] if input_size else None)


def record_of(cfg: Config, input_size: Optional[Sequence[int]]
              ) -> ModelRecord:
    """The :class:`~.runtimes.record.ModelRecord` of a file exported from
    ``cfg`` at ``input_size`` ((H, W), or None for a dynamic H/W),
    with its inference :func:`recipe_of` (whose input size is the
    record's)."""
    head = _head(cfg)
    meta = dataset_meta(cfg)
    return ModelRecord(
        schema=SCHEMA,
        config=osp.basename(cfg.filename) if cfg.filename else None,
        backbone=_backbone_name(cfg.model.get('backbone') or {}),
        block_type=block_type(cfg),
        dilation_mode=(cfg.model.get('backbone') or {}).get(
            'dilation_mode'),
        decode_head=str(getattr(head.get('type'), '__name__',
                                head.get('type'))),
        num_classes=head.get('num_classes'),
        classes=list(meta['classes']) if meta else None,
        input_size=[int(s) for s in input_size] if input_size else None,
        recipe=recipe_of(cfg, input_size))


#: the keys of a QAT file's ``qat`` entry (:func:`qat_record`)
QAT_KEYS = ('checkpoint', 'iterations', 'lr', 'schedule', 'seed',
            'batch_size', 'train_images', 'targets')


def qat_record(record: ModelRecord, checkpoint: Optional[str],
               iterations: int, lr: float, seed: int,
               **more) -> ModelRecord:
    """``record`` of a file made by quantization-aware fine-tuning: its
    ``qat`` entry names the source ``checkpoint`` (the file name), the
    ``iterations``, learning rate ``lr`` and ``seed`` of the run, and
    ``more`` of :data:`QAT_KEYS` (``schedule``, ``batch_size``,
    ``train_images``, ``targets``)."""
    unknown = sorted(set(more) - set(QAT_KEYS))
    if unknown:
        raise TypeError(f'qat_record() takes no {", ".join(unknown)}')
    entry = dict(
        checkpoint=osp.basename(checkpoint) if checkpoint else None,
        iterations=int(iterations), lr=float(lr), seed=int(seed), **more)
    return dataclasses.replace(record, qat={k: entry.get(k)
                                            for k in QAT_KEYS})


def model_record(cfg: Config, input_size: Optional[Sequence[int]]) -> dict:
    """:func:`record_of` as written into a file (JSON-ready:
    :meth:`~.runtimes.record.ModelRecord.to_dict`)."""
    return record_of(cfg, input_size).to_dict()


def _describe(record: ModelRecord) -> str:
    return (f"{record.backbone} + {record.decode_head}, "
            f"{record.num_classes} classes")


def check_belongs(path: str, info: RunInfo, cfg: Config,
                  input_size: Optional[Sequence[int]]) -> None:
    """Refuse the model file ``path`` (loaded: ``info`` holds its
    ``record`` and ``input_size``) for evaluation with ``cfg``, whose test
    loop runs inputs of ``input_size``: another model (backbone, decoder,
    number of classes) or another input size. Files without a record
    (exported elsewhere) are checked for their size only; ``input_size``
    None checks the model only."""
    record = info.record
    name = osp.basename(cfg.filename) if cfg.filename else 'this config'
    if record:
        mine = record_of(cfg, input_size)
        if any(getattr(record, k) != getattr(mine, k) for k in IDENTITY):
            raise UsageError(
                f'{path!r} is {_describe(record)} (exported from '
                f"{record.config}), but {name} builds "
                f'{_describe(mine)}: evaluate it with the config it was '
                'exported from, or export this config\'s checkpoint')
    have = info.input_size
    if input_size is not None and have and \
            tuple(have) != tuple(input_size):
        h, w = input_size
        again = (f'quantize it again at {h}x{w} (tools/quantize.py CONFIG '
                 f'CHECKPOINT OUT: the default size for this config, or '
                 f'--shape {h} {w})' if info.precision == 'int8' else
                 f'export it again at {h}x{w} (tools/export.py\'s default '
                 'size for this config)')
        raise UsageError(
            f'{path!r} takes {have[0]}x{have[1]} inputs, but the test loop '
            f'of {name} runs {h}x{w} ones: {again}')


__all__ = ['RECORD_KEY', 'ModelRecord', 'Recipe', 'record_of', 'qat_record',
           'QAT_KEYS',
           'model_record', 'recipe_of', 'config_input_size', 'check_belongs']
