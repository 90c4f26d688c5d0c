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

from ..deploy.build import check_model
from ..engine.checkpoint import load_any_checkpoint
from ..engine.config import without_pretrained
from ..engine.dist import finish_distributed
from ..engine.hooks import FusedEvalHook
from ..errors import UsageError, opt
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


def test_exported(cfg: Config, path: str) -> dict:
    """Evaluate an exported model (ONNX for ONNX Runtime, IR ``.xml`` for
    OpenVINO; fp32 or INT8, run as written) on the config's test set:
    mmseg's test loop (whole or sliding-window inference and its
    post-processing) with the runtime running every forward."""
    from ..deploy.build import build_segmentor
    from ..deploy.quantize import evaluate
    from ..deploy.runtimes import runtime_of_file
    runtime = runtime_of_file(path)
    model = build_segmentor(cfg).eval()
    model.encode_decode = runtime.load(path)
    info = model.encode_decode.info
    name = f"{runtime.label} ({osp.basename(path)}, {info['precision']})"
    try:
        result = evaluate({name: model}, cfg)[name]
    except Exception as e:  # noqa: B902  (the runtimes' own errors)
        msg = type(e).__name__ + str(e)
        if not any(k in msg for k in ('InvalidArgument', 'shape', 'Shape',
                                      'dimension')):
            raise
        raise UsageError(
            f'{path!r} does not take the inputs of this config\'s test '
            f'loop: {str(e).strip().splitlines()[0][:300]}. Export it at the '
            'size the test loop runs (the sliding window of a "slide" '
            'config, else the test images; tools/quantize.py does).'
        ) from None
    metrics = result['metrics']
    print_log(f'{name}: ' + '  '.join(
        f'{k}: {v:.4f}' for k, v in metrics.items()), logger='current')
    return metrics


def test(cfg: Config,
         checkpoint: str,
         out: Optional[str] = None,
         show_dir: Optional[str] = None,
         check: bool = True,
         allow_unsafe: bool = False,
         conv_impl: Optional[str] = None) -> dict:
    """Evaluate ``checkpoint`` (a training or a fused deploy checkpoint, or
    an exported ONNX / OpenVINO IR model: :func:`test_exported`) with the
    config's test loop; the FusedEvalHook evaluates the fused model (with
    ``conv_impl`` for its 3x3 convs when given, see
    :func:`repseg.ops.use_fast_convs`)."""
    if not osp.isfile(checkpoint):
        raise UsageError(f'checkpoint {checkpoint!r} does not exist')
    from ..deploy.runtimes import runtime_of_file
    if runtime_of_file(checkpoint) is not None:
        if out or show_dir:
            raise UsageError('an exported model is evaluated for its '
                             f'metrics only; drop {opt("out", None)} / '
                             f'{opt("show_dir", None)}')
        if check:
            check_data(cfg, loaders=('test_dataloader', ))
        return test_exported(cfg, checkpoint)
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


__all__ = ['test', 'test_exported', 'fused_eval_hook_cfg']
