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


def test_onnx(cfg: Config, path: str) -> dict:
    """Evaluate an exported ONNX model (fp32 or INT8) on the config's test
    set: mmseg's test loop (whole or sliding-window inference and its
    post-processing) with ONNX Runtime running every forward."""
    from ..deploy.build import build_segmentor
    from ..deploy.onnx import OrtEncodeDecode, ort_session
    from ..deploy.quantize import evaluate
    model = build_segmentor(cfg).eval()
    model.encode_decode = OrtEncodeDecode(ort_session(path))
    name = f'ONNX Runtime ({osp.basename(path)})'
    try:
        result = evaluate({name: model}, cfg)[name]
    except Exception as e:  # noqa: B902  (onnxruntime's own errors)
        if 'InvalidArgument' not in type(e).__name__ + str(e):
            raise
        raise UsageError(
            f'{path!r} does not take the inputs of this config\'s test '
            f'loop: {str(e).splitlines()[0][:300]}. Export it at the size '
            'the test loop runs (the sliding window of a "slide" config, '
            'else the test images; tools/quantize.py does).') from None
    metrics = result['metrics']
    print_log('ONNX Runtime: ' + '  '.join(
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
    an ONNX model: :func:`test_onnx`) with the config's test loop; the
    FusedEvalHook evaluates the fused model (with ``conv_impl`` for its 3x3
    convs when given, see :func:`repseg.ops.use_fast_convs`)."""
    if not osp.isfile(checkpoint):
        raise UsageError(f'checkpoint {checkpoint!r} does not exist')
    if checkpoint.endswith('.onnx'):
        if out or show_dir:
            raise UsageError('an ONNX model is evaluated for its metrics '
                             f'only; drop {opt("out", None)} / '
                             f'{opt("show_dir", None)}')
        if check:
            check_data(cfg, loaders=('test_dataloader', ))
        return test_onnx(cfg, checkpoint)
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


__all__ = ['test', 'test_onnx', 'fused_eval_hook_cfg']
