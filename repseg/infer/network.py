# Copyright (c) repseg contributors. All rights reserved.
"""The network of an inference run from what the user names: a deployed
file (.onnx, OpenVINO .xml; fp32 or INT8) in its runtime, with the recipe
its record carries (or a config's, for files exported before records had
one), or a config with a training or fused checkpoint in PyTorch (the
fused model). Deployed files need neither torch nor an OpenMMLab package;
the PyTorch path and ``config`` import them when used."""
import os.path as osp
from typing import Optional

from ..deploy.runtimes import RunInfo, default_threads, runtime_of_file
from ..errors import UsageError, opt
from .engine import InferSettings, Network, file_identity
from .recipe import Recipe

CONFIG_SUFFIXES = ('.py', )


def _config_recipe(config: str, input_size) -> tuple:
    """The recipe of a config (the training stack is needed here) and the
    config."""
    from ..deploy.record import recipe_of
    from ..engine.config import load_cfg
    cfg = load_cfg(config)
    return Recipe.from_dict(recipe_of(cfg, input_size)), cfg


def load_network(model: str, checkpoint: Optional[str] = None,
                 config: Optional[str] = None,
                 settings: Optional[InferSettings] = None,
                 images: int = 1) -> Network:
    """The :class:`~.engine.Network` of ``model``: a deployed file alone
    (``config`` for a file without a recipe in its record), or a config
    (.py) with ``checkpoint``. ``images``: how many the run will segment
    (``settings.mode`` 'auto' runs more than one in throughput mode)."""
    s = settings or InferSettings()
    if not osp.exists(model):
        raise UsageError(f'model {model!r} does not exist: give a deployed '
                         'file (.onnx, .xml) or a config (.py) with '
                         f'{opt("checkpoint", "CKPT")}')
    if model.lower().endswith(CONFIG_SUFFIXES):
        if not checkpoint:
            raise UsageError(f'{model!r} is a config: give its weights with '
                             f'{opt("checkpoint", "CKPT")} (a training or '
                             'fused checkpoint)')
        from .torch_model import torch_network
        return torch_network(model, checkpoint, s, s.run_mode(images))
    runtime = runtime_of_file(model)
    if runtime is None:
        raise UsageError(
            f'{model!r} is neither a deployed model file (.onnx, OpenVINO '
            '.xml) nor a config (.py): give one of them (a checkpoint goes '
            f'with its config: {opt("checkpoint", "CKPT")})')
    if checkpoint:
        raise UsageError(f'{model!r} is a deployed file and holds its '
                         f'weights: drop {opt("checkpoint", None)}')
    mode = s.run_mode(images)
    # the class map computed in the graph where the runtime can (numpy's
    # argmax over the logits costs as much as a small network)
    extra = dict(labels=True) if runtime.argmax_in_graph else {}
    loaded = runtime.load(model, None, s.threads or default_threads(), mode,
                          cache_dir=s.cache_dir, **extra)
    info: RunInfo = loaded.info
    record = info.record or {}
    if config:
        recipe, cfg = _config_recipe(config, info.input_size)
        if info.record:   # the file must be this config's model
            from ..deploy.record import check_belongs
            check_belongs(model, info, cfg, info.input_size)
    elif record.get('recipe'):
        recipe = Recipe.from_dict({**record['recipe'],
                                   'input_size': info.input_size})
    else:
        raise UsageError(
            f'{model!r} carries no inference recipe (it was exported before '
            'repseg wrote one into its files): give the config it was '
            f'exported from with {opt("config", "CONFIG")}, or export it '
            'again')
    return Network(run=loaded, info=info, recipe=recipe,
                   identity=file_identity(model, record=info.record),
                   labels=loaded.argmax if loaded.has_labels else None)


__all__ = ['load_network']
