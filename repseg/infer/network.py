# Copyright (c) repseg contributors. All rights reserved.
"""The network of an inference run from what the user names: a deployed
file (.onnx, OpenVINO .xml; fp32 or INT8) in its runtime, with the recipe
its record carries (or a config's, for files exported before records had
one), or a config with a training or fused checkpoint in PyTorch (the
fused model). Deployed files need neither torch nor an OpenMMLab package;
the PyTorch path and ``config`` import them when used."""
import os.path as osp
from typing import Optional

from ..deploy.runtimes import (RunInfo, RuntimeModel, default_threads,
                               runtime_of_file)
from ..errors import UsageError, opt
from .job import InferSettings, Network, file_identity
from .recipe import Recipe, config_recipe

CONFIG_SUFFIXES = ('.py', )


def _kind(model: str, checkpoint: Optional[str],
          config: Optional[str] = None):
    """The runtime of a deployed file, or None for a config (with its
    checkpoint); what the user named checked on the way."""
    if not osp.exists(model):
        raise UsageError(f'model {model!r} does not exist: give a deployed '
                         'file (.onnx, .xml) or a config (.py) with '
                         f'{opt("checkpoint", "CKPT")}')
    if osp.isdir(model):
        raise UsageError(f'model {model!r} is a folder: give a deployed file '
                         '(.onnx, .xml) or a config (.py) with '
                         f'{opt("checkpoint", "CKPT")}')
    if model.lower().endswith(CONFIG_SUFFIXES):
        if not checkpoint:
            raise UsageError(f'{model!r} is a config: give its weights with '
                             f'{opt("checkpoint", "CKPT")} (a training or '
                             'fused checkpoint)')
        if runtime_of_file(checkpoint) is not None:
            raise UsageError(
                f'{checkpoint!r} is a deployed model file, not a PyTorch '
                f'checkpoint: give it as {opt("model", checkpoint)} alone '
                '(it holds its weights and its inference recipe; add '
                f'{opt("config", model)} only for a file exported before '
                'files recorded their recipe)')
        if checkpoint.lower().endswith(CONFIG_SUFFIXES):
            raise UsageError(
                f'{checkpoint!r} is a config, not a checkpoint: give the '
                f'checkpoint with {opt("checkpoint", "CKPT")}')
        if config:
            raise UsageError(
                f'{opt("config", None)} is for deployed files that do not '
                f'record their recipe; {model!r} is the config itself: drop '
                f'{opt("config", None)}')
        return None
    runtime = runtime_of_file(model)
    if runtime is None and checkpoint and checkpoint.lower().endswith(
            CONFIG_SUFFIXES):
        raise UsageError(
            f'{model!r} and {checkpoint!r} are the other way round: give '
            f'the config as {opt("model", checkpoint)} and the checkpoint as '
            f'{opt("checkpoint", model)}')
    if runtime is None and osp.isfile(osp.splitext(model)[0] + '.xml'):
        raise UsageError(
            f'{model!r} is not a model file repseg runs: give '
            f'{opt("model", osp.splitext(model)[0] + ".xml")} (OpenVINO '
            'reads the weights next to it)')
    if runtime is None:
        raise UsageError(
            f'{model!r} is neither a deployed model file (.onnx, OpenVINO '
            '.xml) nor a config (.py): give one of them (a checkpoint goes '
            f'with its config: {opt("checkpoint", "CKPT")})')
    if checkpoint:
        raise UsageError(f'{model!r} is a deployed file and holds its '
                         f'weights: drop {opt("checkpoint", None)}')
    return runtime


def _file_recipe(model: str, info: RunInfo,
                 config: Optional[str]) -> Recipe:
    """The recipe of a deployed file: its record's, or ``config``'s (which
    must be the file's config when the file has a record; its input size
    is the file's)."""
    record = info.record
    if config:
        recipe, cfg = config_recipe(config, info.input_size)
        if info.record:   # the file must be this config's model
            from ..deploy.record import check_belongs
            check_belongs(model, info, cfg, info.input_size)
        return recipe
    if record is not None and record.recipe is not None:
        return record.recipe   # its input size is the record's
    raise UsageError(
        f'{model!r} carries no inference recipe (it was exported before '
        'repseg wrote one into its files): give the config it was '
        f'exported from with {opt("config", "CONFIG")}, or export it '
        'again')


def _record_dict(info: RunInfo) -> Optional[dict]:
    """The file's record as the manifest writes it (plain data)."""
    return info.record.to_dict() if info.record is not None else None


def load_network(model: str, checkpoint: Optional[str] = None,
                 config: Optional[str] = None,
                 settings: Optional[InferSettings] = None,
                 images: int = 1) -> Network:
    """The :class:`~.job.Network` of ``model``: a deployed file alone
    (``config`` for a file without a recipe in its record), or a config
    (.py) with ``checkpoint``. ``images``: how many the run will segment
    (``settings.mode`` 'auto' runs more than one in throughput mode)."""
    s = settings or InferSettings()
    runtime = _kind(model, checkpoint, config)
    if runtime is None:
        from .torch_model import torch_network
        return torch_network(model, checkpoint, s, s.run_mode(images))
    # the class map computed in the graph where the runtime can (numpy's
    # argmax over the logits costs as much as a small network)
    extra = dict(labels=True) if runtime.argmax_in_graph else {}
    loaded = runtime.load(model, None, s.threads or default_threads(),
                          s.run_mode(images), cache_dir=s.cache_dir, **extra)
    info: RunInfo = loaded.info
    try:
        recipe = _file_recipe(model, info, config)
    except Exception:
        loaded.close()
        raise
    return Network(model=loaded, recipe=recipe,
                   identity=file_identity(model, record=_record_dict(info)))


def _not_loaded(x):
    raise RuntimeError('this network was only described (describe_network):'
                       ' load_network() runs it')


def describe_network(model: str, checkpoint: Optional[str] = None,
                     config: Optional[str] = None) -> Network:
    """What :func:`load_network` would return of ``model`` but the running:
    ``info`` (runtime, file, precision, record, input size), ``recipe`` and
    ``identity`` (the manifest's), read from the files without compiling or
    building the model; ``run`` raises. For a process that records a run
    while others segment (the Ray driver)."""
    runtime = _kind(model, checkpoint, config)
    if runtime is None:
        if not osp.isfile(checkpoint):
            raise UsageError(f'checkpoint {checkpoint!r} does not exist')
        from ..deploy.runs import PYTORCH
        from .torch_model import torch_identity
        recipe, _ = config_recipe(model, None)
        return Network(model=RuntimeModel(_not_loaded, RunInfo(
            runtime=PYTORCH, file=checkpoint)), recipe=recipe,
            identity=torch_identity(model, checkpoint))
    info = runtime.read_info(model)
    return Network(model=RuntimeModel(_not_loaded, info),
                   recipe=_file_recipe(model, info, config),
                   identity=file_identity(model, record=_record_dict(info)))


__all__ = ['load_network', 'describe_network']
