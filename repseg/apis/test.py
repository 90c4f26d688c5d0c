# Copyright (c) repseg contributors. All rights reserved.
"""Testing a training or fused checkpoint on the FUSED model (the config's
test loop with FusedEvalHook), single- or multi-process."""
import copy
import os.path as osp
import time
from typing import Optional

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from ..deploy.build import check_channels, check_model
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import without_pretrained
from ..engine.dist import finish_distributed
from ..engine.hooks import FusedEvalHook
from ..errors import UsageError
from ..visualization import annotate_overlays, new_pngs
from .checks import check_data


def fused_eval_hook_cfg(cfg: Config) -> dict:
    """The ``FusedEvalHook`` entry of ``cfg.custom_hooks`` (added when the
    config has none, so that evaluation always runs the fused model)."""
    hooks = cfg.setdefault('custom_hooks', [])
    for hook in hooks:
        if hook.get('type') in ('FusedEvalHook', FusedEvalHook):
            return hook
    hooks.append(dict(type='FusedEvalHook'))
    return hooks[-1]


def test(cfg: Config,
         checkpoint: str,
         out: Optional[str] = None,
         show_dir: Optional[str] = None,
         check: bool = True,
         allow_unsafe: bool = False,
         conv_impl: Optional[str] = None) -> dict:
    """Evaluate ``checkpoint`` (a training or a fused deploy checkpoint) with
    the config's test loop; the FusedEvalHook evaluates the fused model
    (with ``conv_impl`` for its 3x3 convs when given, see
    :func:`repseg.ops.use_fast_convs`)."""
    if not osp.isfile(checkpoint):
        raise UsageError(f'checkpoint {checkpoint!r} does not exist')
    cfg = copy.deepcopy(cfg)
    hook = fused_eval_hook_cfg(cfg)
    if conv_impl is not None:
        hook['conv_impl'] = conv_impl
    if check:
        check_data(cfg, loaders=('test_dataloader', ))
        check_model(cfg)
    cfg.load_from = None
    cfg.resume = False
    without_pretrained(cfg.model)   # the weights come from the checkpoint
    if show_dir:
        vis = cfg.default_hooks.visualization
        vis.draw = True
        vis.interval = 1
        vis.show = False
        cfg.visualizer.save_dir = show_dir
    if out:
        cfg.test_evaluator.output_dir = out
        cfg.test_evaluator.keep_results = True
    runner = Runner.from_cfg(cfg)
    # with several processes the Runner has wrapped the model in DDP
    # (keys prefixed 'module.'): the checkpoint is the inner model's
    model = runner.model
    if is_model_wrapper(model):
        model = model.module
    check_channels(model)
    kind = load_any_checkpoint(model, checkpoint, runner.logger,
                               allow_unsafe)
    print_log(
        f'Loaded a {kind.upper()} checkpoint from {checkpoint}: ' +
        ('the multi-branch model is fused for evaluation by FusedEvalHook.'
         if kind == 'training' else
         'the model was built in its fused (deploy) form to match it.'),
        logger='current')
    start = time.time()
    metrics = runner.test()
    if show_dir:
        meta = runner.test_dataloader.dataset.metainfo
        annotate_overlays(new_pngs(show_dir, start - 1), meta['classes'],
                          meta['palette'])
    if cfg.get('launcher', 'none') != 'none':
        finish_distributed()
    return metrics


__all__ = ['test', 'fused_eval_hook_cfg']
