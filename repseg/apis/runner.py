# Copyright (c) repseg contributors. All rights reserved.
"""Configuration, pre-flight checks, training and testing on top of
mmengine's Runner (what tools/train.py and tools/test.py call)."""
import copy
import glob
import logging
import os
import os.path as osp
import re
import time
from typing import Optional, Sequence
from urllib.error import URLError

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_state_dict

from ..datasets.cityscapes import DatasetError, check_cityscapes
from ..engine.checkpoint import (CheckpointError, checkpoint_kind,
                                 load_state_dict_file)
from ..engine.dist import init_cpu_distributed
from ..engine.hooks import FusedEvalHook
from ..models.repvgg import RepVGG
from ..reparam import reparameterize_model
from ..visualization import annotate_overlays, new_pngs


class UsageError(RuntimeError):
    """A mistake in what the user asked for; the message says what to do."""


def replace_syncbn(cfg, norm_type: str = 'BN'):
    """Replace every ``SyncBN``/``MMSyncBN`` norm config in ``cfg`` (a
    Config, dict or list, modified in place) by ``norm_type``. Returns the
    number of replacements.

    SyncBN needs CUDA and a process group; on CPU (single process or gloo)
    repseg trains with plain BN instead: this is the one place that swap is
    done.
    """
    count = 0
    if isinstance(cfg, dict):
        if cfg.get('type') in ('SyncBN', 'MMSyncBN'):
            cfg['type'] = norm_type
            count += 1
        for v in cfg.values():
            count += replace_syncbn(v, norm_type)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            count += replace_syncbn(v, norm_type)
    return count


def adapt_to_device(cfg: Config) -> Config:
    """Make a config runnable on the machine at hand: without CUDA, SyncBN
    falls back to BN (with a warning), NCCL to gloo, and a multi-process
    launch ('pytorch' launcher) uses a gloo group and CPU DDP."""
    if not torch.cuda.is_available():
        n = replace_syncbn(cfg.model)
        if n:
            print_log(
                f'No CUDA device: SyncBN cannot run here, so the {n} SyncBN '
                'layer configs of this model fall back to BN (statistics per '
                'process; identical for a single process).',
                logger='current', level=logging.WARNING)
        dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
        if dist_cfg.get('backend') == 'nccl':
            dist_cfg['backend'] = 'gloo'
        if cfg.get('launcher', 'none') != 'none':
            # several CPU processes: gloo process group + DDP without
            # device ids (see repseg.engine.dist)
            init_cpu_distributed(cfg.launcher)
            cfg.model_wrapper_cfg = dict(
                type='CPUDistributedDataParallel',
                broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters',
                                               False))
    return cfg


def follow_max_iters(cfg: Config, old_iters: Optional[int],
                     cfg_options: dict) -> None:
    """When ``train_cfg.max_iters`` was overridden, move the end of every
    parameter scheduler that ended at the old ``max_iters`` (poly LR) to the
    new one, unless the override set that end itself; say what was done."""
    new_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    if old_iters is None or new_iters in (None, old_iters):
        return
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for i, sched in enumerate(schedulers):
        own = any(k.startswith(f'param_scheduler.{i}.') or k ==
                  'param_scheduler' for k in cfg_options)
        if sched.get('end') == old_iters and not own:
            sched['end'] = new_iters
            print_log(
                f"train_cfg.max_iters is {new_iters} (the config says "
                f"{old_iters}): the {sched.get('type')} schedule now ends at "
                f'iteration {new_iters} too.', logger='current')


def load_cfg(config: str,
             work_dir: Optional[str] = None,
             cfg_options: Optional[dict] = None,
             launcher: str = 'none',
             amp: bool = False,
             resume: bool = False,
             auto_scale_lr: bool = False) -> Config:
    """Read a config and apply the usual mmseg command-line overrides."""
    if not osp.isfile(config):
        raise UsageError(f'config file {config!r} does not exist')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    old_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except (TypeError, KeyError, ValueError) as e:
            raise UsageError(
                f'the overrides {cfg_options} do not fit the config '
                f'{config}: {e}. (A key below a setting that is None needs '
                'the whole dict, e.g. model.backbone.init_cfg=None or a new '
                'value for the parent key.)') from None
        follow_max_iters(cfg, old_iters, cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    if amp:
        if not torch.cuda.is_available():
            raise UsageError(
                'automatic mixed precision (--amp) needs a CUDA GPU: '
                "mmengine's AmpOptimWrapper scales fp16 gradients on CUDA. "
                'On the CPU train in fp32 (without --amp).')
        if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        cfg.setdefault('auto_scale_lr', dict(base_batch_size=16))
        cfg.auto_scale_lr.enable = True
    cfg.resume = resume
    return adapt_to_device(cfg)


def _dataset_roots(cfg: Config, loaders: Sequence[str]) -> Sequence[tuple]:
    roots = []
    for key in loaders:
        loader = cfg.get(key)
        if not loader:
            continue
        ds = loader.get('dataset', {})
        if ds.get('type') == 'CityscapesDataset':
            split = osp.basename(
                ds.get('data_prefix', {}).get('img_path', '').rstrip('/'))
            roots.append((ds.get('data_root', ''), split))
    return roots


def check_data(cfg: Config,
               loaders: Sequence[str] = ('train_dataloader',
                                         'val_dataloader')) -> None:
    """Check the Cityscapes folders that the given dataloaders of a config
    read, before the Runner starts (raises :class:`DatasetError` with a
    pointer to data/README.md)."""
    done = set()
    for root, split in _dataset_roots(cfg, loaders):
        if (root, split) not in done:
            counts = check_cityscapes(root, splits=(split, ))
            print_log(f'Dataset check: {root} {split}: {counts[split]} '
                      'images, labels OK', logger='current')
            done.add((root, split))


def check_pretrained(cfg: Config) -> None:
    """Refuse to start when a local pretrained checkpoint named by
    ``init_cfg`` does not exist (instead of failing deep in init)."""
    def walk(node, path):
        if isinstance(node, dict):
            if node.get('type') == 'Pretrained':
                ckpt = node.get('checkpoint')
                if isinstance(ckpt, str) and '://' not in ckpt and \
                        not osp.isfile(ckpt):
                    raise UsageError(
                        f'{path}.init_cfg asks for the pretrained checkpoint '
                        f'{ckpt!r}, which does not exist. Download it (see '
                        'README.md, "Pretrained backbones") or train from '
                        f'scratch with --cfg-options {path}.init_cfg=None')
            for k, v in node.items():
                walk(v, f'{path}.{k}' if k != 'init_cfg' else path)
    walk(cfg.model, 'model')


def without_pretrained(model_cfg) -> dict:
    """Drop the pretrained initialization of a model config (in place; the
    weights come from a checkpoint). Returns ``model_cfg``."""
    model_cfg.pretrained = None
    if model_cfg.get('backbone'):
        model_cfg.backbone.init_cfg = None
    return model_cfg


def check_work_dir(cfg: Config) -> None:
    """Never overwrite the checkpoints of an earlier run silently; never
    'resume' a run that is not there (mmengine would start from scratch)."""
    if cfg.get('resume') and cfg.get('load_from') is None:
        found = glob.glob(osp.join(cfg.work_dir, '*.pth'))
        if not found:
            raise UsageError(
                f'nothing to resume: the work dir {cfg.work_dir!r} '
                + ('holds no checkpoint' if osp.isdir(cfg.work_dir) else
                   'does not exist')
                + '. Check the work dir (--work-dir; by default '
                'work_dirs/<config name>), or start a new run without '
                '--resume.')
        return
    if cfg.get('resume') or not osp.isdir(cfg.work_dir):
        return
    old = glob.glob(osp.join(cfg.work_dir, '*.pth'))
    if old:
        raise UsageError(
            f'work dir {cfg.work_dir!r} already holds {len(old)} checkpoint(s)'
            ' of an earlier run. Pass --resume to continue that run, or '
            '--work-dir to start a new one elsewhere.')


def _head_inputs(head) -> list:
    """(in_index, in_channels) pairs a decode head reads (DeepLabV3+'s
    low-level features: ``inputs[0]`` with ``c1_in_channels``)."""
    idx, ch = head.in_index, head.in_channels
    if isinstance(idx, int):
        pairs = [(idx, ch)]
    else:
        pairs = list(zip(idx, ch if isinstance(ch, (list, tuple)) else
                         [ch] * len(idx)))
    c1 = getattr(head, 'c1_bottleneck', None)
    if c1 is not None and hasattr(c1, 'conv'):
        pairs.append((0, c1.conv.in_channels))
    return pairs


def _heads(model) -> list:
    """(config path, head) of every decode and auxiliary head."""
    found = []
    for part in ('decode_head', 'auxiliary_head'):
        head = getattr(model, part, None)
        if isinstance(head, torch.nn.ModuleList):
            found += [(f'{part}[{i}]', h) for i, h in enumerate(head)]
        elif head is not None:
            found.append((part, head))
    return [(p, h) for p, h in found if hasattr(h, 'in_index')]


def check_channels(model: torch.nn.Module) -> None:
    """Refuse a segmentor whose heads (or neck) expect other channel numbers
    than its backbone gives, before the first forward fails deep inside a
    conv. Checks backbones that state their per-stage ``out_channels`` and
    ``out_indices`` (RepVGG); others are left to the forward."""
    if is_model_wrapper(model):
        model = model.module
    backbone = getattr(model, 'backbone', None)
    widths = getattr(backbone, 'out_channels', None)
    indices = getattr(backbone, 'out_indices', None)
    if not isinstance(widths, (list, tuple)) or indices is None:
        return
    feats = [widths[i] for i in indices]
    name = type(backbone).__name__
    arch = getattr(backbone, 'arch', {})
    if isinstance(arch, dict) and arch.get('name'):
        name += '-' + arch['name']
    where = (f'the backbone {name} gives {feats} channels (its outputs = '
             f'stages {tuple(indices)})')
    neck = getattr(model, 'neck', None)
    if neck is not None:
        want = getattr(neck, 'in_channels', None)
        if isinstance(want, (list, tuple)) and list(want) != feats[:len(
                want)]:
            raise UsageError(
                f'model.neck.in_channels is {list(want)} but {where}. Set '
                f'model.neck.in_channels={feats}.')
        return
    for part, head in _heads(model):
        bad = [(i, c) for i, c in _head_inputs(head)
               if not -len(feats) <= i < len(feats) or feats[i] != c]
        if bad:
            i, c = bad[0]
            got = feats[i] if -len(feats) <= i < len(feats) else 'nothing'
            raise UsageError(
                f'model.{part} expects {c} channels at backbone output '
                f'{i} (in_index {head.in_index}, in_channels '
                f'{head.in_channels}'
                + (', c1_in_channels for output 0'
                   if hasattr(head, 'c1_bottleneck') else '')
                + f') but {where}, so output {i} has {got}. Fix the '
                f'channels of model.{part} (README.md, "Plugging RepVGG '
                'into any mmseg model", has the channels of every arch).')


def check_model(cfg: Config) -> None:
    """Build the model of ``cfg`` once before the Runner does (and dumps the
    whole config): a typo (an unknown arch or dilation mode, a ResNet
    argument left in a RepVGG backbone) or channels that do not match
    become one clear :class:`UsageError` instead of a traceback."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    try:
        model = MODELS.build(without_pretrained(copy.deepcopy(cfg.model)))
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f'the model of this config cannot be built: '
                         f'{_innermost(e)}') from None
    check_channels(model)


def _innermost(e: Exception) -> str:
    """The message of a registry build error without mmengine's chain of
    'class `X` in module: ' prefixes."""
    msg = str(e).strip()
    while True:
        m = re.match(r'^class `(\w+)` in [\w./\\-]+: (.*)$', msg, re.S)
        if not m:
            return msg
        msg = f'{m.group(1)}: {m.group(2)}' if not m.group(2).startswith(
            'class `') else m.group(2)


def strict_load_from(runner: Runner, allow_unsafe: bool = False) -> None:
    """Make ``load_from`` (fine-tuning from a local checkpoint) load like
    every other repseg path: safely, into the unwrapped model, with
    ``strict=True`` and an error that names mismatching keys. mmengine's
    own ``load_from`` loads non-strictly and only warns. (Not for resuming:
    ``Runner.resume`` reads the optimizer and loop state through the same
    method.)"""
    def load_checkpoint(filename, *args, **kwargs):
        if not osp.isfile(str(filename)):   # URLs etc.: mmengine's loader
            return Runner.load_checkpoint(runner, filename, *args, **kwargs)
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        kind = load_any_checkpoint(model, filename, runner.logger,
                                   allow_unsafe)
        print_log(f'load_from: loaded the {kind} checkpoint {filename} '
                  '(strict: every weight matched).', logger='current')
    runner.load_checkpoint = load_checkpoint


def check_resume_checkpoint(cfg: Config, allow_unsafe: bool = False) -> None:
    """Read the checkpoint ``--resume`` will continue from with the safe
    loader first: one whose unpickling would run code is refused with the
    clear error (mmengine's resume would stop in a traceback), unless
    ``allow_unsafe``, which then lets torch unpickle it fully."""
    from mmengine.runner.checkpoint import find_latest_checkpoint
    path = cfg.get('load_from') or find_latest_checkpoint(cfg.work_dir)
    if not path or not osp.isfile(path):
        return
    try:
        load_state_dict_file(path)
    except CheckpointError as e:
        if not (allow_unsafe and 'full unpickling' in str(e)):
            raise
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'


def train(cfg: Config, check: bool = True,
          allow_unsafe: bool = False) -> Runner:
    """Train with mmengine's Runner after the pre-flight checks; returns the
    runner. Ctrl-C stops with a :class:`UsageError` that says how to
    resume."""
    if check:
        check_data(cfg)
        check_pretrained(cfg)
        check_work_dir(cfg)
        check_model(cfg)
    if cfg.get('resume'):
        check_resume_checkpoint(cfg, allow_unsafe)
    runner = Runner.from_cfg(cfg)
    if cfg.get('load_from') and not cfg.get('resume'):
        strict_load_from(runner, allow_unsafe)
    try:
        runner.train()
    except Exception as e:  # noqa: B902  (only the cases below are mapped)
        if isinstance(e, URLError):
            raise UsageError(
                f'downloading pretrained weights failed ({e.reason}): this '
                'config asks for weights from the internet (e.g. mmseg\'s '
                "ResNet bases: model.pretrained='open-mmlab://resnet50_v1c')"
                '. Without network access, put the file into torch\'s hub '
                f'cache ({osp.join(torch.hub.get_dir(), "checkpoints")}), '
                'point the config at a local file, or train from scratch '
                'with --cfg-options model.pretrained=None.') from None
        bad = re.search(r'failed to load image: (\S+)', str(e))
        if bad is None:
            raise
        roots = sorted({r for r, _ in _dataset_roots(cfg, (
            'train_dataloader', 'val_dataloader'))}) or ['DATA_ROOT']
        raise DatasetError(
            f'cannot decode the image {bad.group(1)} (iteration '
            f'{runner.iter}): it is corrupt or not an image. Replace or '
            'remove it, and check every file of the dataset with: python '
            f'tools/check_dataset.py {roots[0]} --all (training only checks '
            'a sample before it starts).') from None
    except KeyboardInterrupt:
        saved = sorted(glob.glob(osp.join(cfg.work_dir, '*.pth')),
                       key=osp.getmtime)
        raise UsageError(
            f'training interrupted at iteration {runner.iter}. '
            + (f'The newest checkpoint is {saved[-1]}; continue with: '
               f'python tools/train.py CONFIG --work-dir {cfg.work_dir} '
               '--resume' if saved else
               'No checkpoint was written yet; start again to train.')
        ) from None
    return runner


def load_any_checkpoint(model: torch.nn.Module, path: str,
                        logger='current', allow_unsafe: bool = False) -> str:
    """Load a training or a fused (deploy) checkpoint into ``model``.

    A fused checkpoint first turns ``model`` into its fused form (in place),
    so that the keys match exactly; both kinds load with strict key
    checking. Returns the kind: 'training' or 'fused'.
    """
    state_dict = load_state_dict_file(path, allow_unsafe)
    kind = checkpoint_kind(state_dict)
    model_fused = any(getattr(m, 'deploy', False) for m in model.modules()
                      if isinstance(m, RepVGG))
    if kind == 'training' and model_fused:
        raise CheckpointError(
            f'{path!r} is a TRAINING checkpoint (multi-branch RepVGG blocks) '
            'but the config builds a fused deploy model '
            '(model.backbone.deploy=True). Use the training config (without '
            'deploy=True): tools/test.py fuses it for evaluation; or turn the '
            'checkpoint into a deploy checkpoint with tools/convert.py.')
    if kind == 'fused':
        # a fused checkpoint into a training-time config: build the fused
        # structure first, then the keys match exactly
        reparameterize_model(model, inplace=True)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    resized = sorted(k for k in set(own) & set(state_dict)
                     if own[k].shape != state_dict[k].shape)
    if missing or unexpected or resized:
        raise CheckpointError(
            f'{path!r} does not fit the model of this config: '
            f'{len(missing)} weights missing (e.g. {missing[:2]}), '
            f'{len(unexpected)} unexpected (e.g. {unexpected[:2]}), '
            f'{len(resized)} of another shape (e.g. {resized[:2]}). Is it a '
            'checkpoint of another arch or head? Use the config it was '
            'trained with.')
    load_state_dict(model, state_dict, strict=True, logger=logger)
    return kind


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
    return metrics


__all__ = [
    'UsageError', 'DatasetError', 'replace_syncbn', 'adapt_to_device',
    'load_cfg', 'check_data', 'check_channels', 'check_pretrained', 'check_work_dir', 'train',
    'test', 'load_any_checkpoint'
]
