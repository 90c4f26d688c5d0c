# Copyright (c) repseg contributors. All rights reserved.
"""Testing a training or fused checkpoint on the FUSED model (the config's
test loop with FusedEvalHook), single- or multi-process."""
import copy
import dataclasses
import os
import os.path as osp
import time
from typing import Optional

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from ..deploy.build import check_model
from ..engine.checkpoint import load_any_checkpoint, read_checkpoint
from ..engine.config import without_pretrained
from ..engine.dist import finish_distributed
from ..engine.hooks import FusedEvalHook
from ..errors import UsageError, opt
from ..settings import Settings
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


def test_exported(cfg: Config, path: str, check: bool = True) -> dict:
    """Evaluate an exported model (ONNX for ONNX Runtime, IR ``.xml`` for
    OpenVINO; fp32 or INT8, run as written) on the config's test set:
    mmseg's test loop (whole or sliding-window inference and its
    post-processing) with the runtime running every forward. A file
    exported from another model is refused first, then (``check``) the
    data is checked, then a file of another input size than the test loop
    runs is refused (:func:`repseg.deploy.check_belongs`)."""
    from ..deploy.build import build_segmentor
    from ..deploy.evaluate import evaluate
    from ..deploy.forward import load_forward, with_forward
    from ..deploy.record import check_belongs, config_input_size
    from ..deploy.runtimes import runtime_label
    forward = load_forward(path)
    info = forward.info
    model = with_forward(build_segmentor(cfg).eval(), forward)
    check_belongs(path, info, cfg, None)
    if check:
        check_data(cfg, loaders=('test_dataloader', ))
    check_belongs(path, info, cfg, config_input_size(cfg, settable=False))
    name = f'{runtime_label(info.runtime)} ({osp.basename(path)}, ' \
        f'{info.precision})'
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


def has_display() -> bool:
    """Whether windows can be opened (an X11 or Wayland display)."""
    return bool(os.environ.get('DISPLAY') or
                os.environ.get('WAYLAND_DISPLAY'))


def use_tta(cfg: Config) -> None:
    """Switch ``cfg`` to test-time augmentation as mmseg's tools/test.py
    does: the test set through ``tta_pipeline`` (several scales and flips),
    the model wrapped in ``tta_model`` (mmseg's SegTTAModel averages the
    views' class probabilities)."""
    missing = [k for k in ('tta_pipeline', 'tta_model') if not cfg.get(k)]
    if missing:
        raise UsageError(
            f'{opt("tta")} needs the config\'s {" and ".join(missing)} '
            '(the augmented test pipeline and the model that merges its '
            "views, as in mmseg's configs/_base_/datasets/cityscapes.py and "
            f'default_runtime.py): add them, or test without {opt("tta")}')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


@dataclasses.dataclass
class TestSettings(Settings):
    """How to test (one field per option of tools/test.py, as in mmseg's).

    Args:
        out (str or None): folder for the predicted label maps.
        show_dir (str or None): folder for prediction overlays.
        show (bool): a window per image for ``wait_time`` seconds (needs
            a display).
        wait_time (float): seconds each window stays.
        tta (bool): test-time augmentation with the config's
            ``tta_pipeline`` and ``tta_model``.
        conv_impl (str or None): how the fused model's 3x3 convs run (see
            :func:`repseg.ops.use_nnpack_convs`); None: the hook's default.
        check (bool): check the data and the checkpoint before the Runner.
        allow_unsafe (bool): full unpickling of the checkpoint.
    """
    __test__ = False   # not a pytest test class
    out: Optional[str] = None
    show_dir: Optional[str] = None
    show: bool = False
    wait_time: float = 2
    tta: bool = False
    conv_impl: Optional[str] = None
    check: bool = True
    allow_unsafe: bool = False


def test(cfg: Config, checkpoint: str,
         settings: Optional[TestSettings] = None) -> dict:
    """Evaluate ``checkpoint`` (a training or a fused deploy checkpoint, or
    an exported ONNX / OpenVINO IR model: :func:`test_exported`) with the
    config's test loop; the FusedEvalHook evaluates the fused model (with
    ``settings.conv_impl`` for its 3x3 convs when given). See
    :class:`TestSettings` for the options (mmseg's tools/test.py flags).
    """
    s = settings if settings is not None else TestSettings()
    if not osp.isfile(checkpoint):
        raise UsageError(f'checkpoint {checkpoint!r} does not exist')
    if s.show and not has_display():
        raise UsageError(
            f'{opt("show")} opens a window per image and needs a display, '
            'which this session has not (DISPLAY is not set): write the '
            f'overlays to a folder with {opt("show_dir", "DIR")} instead')
    from ..deploy.runtimes import runtime_of_file
    if runtime_of_file(checkpoint) is not None:
        if s.out or s.show_dir or s.show or s.tta:
            raise UsageError(
                'an exported model is evaluated for its metrics only; drop '
                f'{opt("out", None)} / {opt("show_dir", None)} / '
                f'{opt("show", None)} / {opt("tta", None)} (or test its '
                'checkpoint with them)')
        return test_exported(cfg, checkpoint, s.check)
    cfg, ckpt = _test_cfg(cfg, checkpoint, s)
    return _run_test(cfg, checkpoint, ckpt, s)


def _test_cfg(cfg: Config, checkpoint: str, s: TestSettings) -> tuple:
    """The config the Runner tests with (fused evaluation, TTA, overlays,
    label maps) and the checkpoint's content when it was checked already
    (read once: problems are found before the Runner prints its
    environment)."""
    cfg = copy.deepcopy(cfg)
    hook = fused_eval_hook_cfg(cfg)
    if s.conv_impl is not None:
        hook['conv_impl'] = s.conv_impl
    ckpt = None
    if s.check:
        check_data(cfg, loaders=('test_dataloader', ))
        ckpt = read_checkpoint(checkpoint, s.allow_unsafe)
        load_any_checkpoint(check_model(cfg), checkpoint,
                            allow_unsafe=s.allow_unsafe, ckpt=ckpt)
    cfg.load_from = None
    cfg.resume = False
    without_pretrained(cfg.model)   # the weights come from the checkpoint
    if s.tta:
        use_tta(cfg)
    if s.show_dir or s.show:
        vis = cfg.default_hooks.visualization
        vis.draw = True
        vis.interval = 1
        vis.show = s.show
        vis.wait_time = s.wait_time
        if s.show_dir:
            cfg.visualizer.save_dir = s.show_dir
    if s.out:
        cfg.test_evaluator.output_dir = s.out
        cfg.test_evaluator.keep_results = True
    return cfg, ckpt


def _run_test(cfg: Config, checkpoint: str, ckpt, s: TestSettings) -> dict:
    """mmengine's Runner: the checkpoint loaded strictly into the inner
    model, the test loop run, the overlays annotated."""
    runner = Runner.from_cfg(cfg)
    # with several processes the Runner has wrapped the model in DDP
    # (keys prefixed 'module.'): the checkpoint is the inner model's
    model = runner.model
    if is_model_wrapper(model):
        model = model.module
    if s.tta:   # SegTTAModel around the segmentor
        model = model.module
    kind = load_any_checkpoint(model, checkpoint, runner.logger,
                               s.allow_unsafe, ckpt=ckpt)
    print_log(
        f'Loaded a {kind.upper()} checkpoint from {checkpoint}: ' +
        ('the multi-branch model is fused for evaluation by FusedEvalHook.'
         if kind == 'training' else
         'the model was built in its fused (deploy) form to match it.'),
        logger='current')
    start = time.time()
    metrics = runner.test()
    if s.show_dir:
        meta = runner.test_dataloader.dataset.metainfo
        annotate_overlays(new_pngs(s.show_dir, start - 1), meta['classes'],
                          meta['palette'])
    if cfg.get('launcher', 'none') != 'none':
        finish_distributed()
    return metrics


__all__ = ['test', 'TestSettings', 'test_exported', 'fused_eval_hook_cfg',
           'use_tta', 'has_display']
