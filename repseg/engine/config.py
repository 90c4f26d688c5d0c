# Copyright (c) repseg contributors. All rights reserved.
"""Reading a config and making it runnable here: the usual mmseg
command-line overrides, CPU fallbacks (SyncBN -> BN, NCCL -> gloo, CPU
DDP), a poly schedule that follows an overridden ``max_iters``."""
import logging
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..errors import UsageError, opt
from .dist import init_cpu_distributed


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


def check_override_keys(cfg: Config, cfg_options: dict) -> None:
    """Refuse an override whose last key is not in the config but close to
    one that is (a typo: ``train_cfg.max_iter`` for ``max_iters``), naming
    the nearest; new keys with no close sibling are allowed (mmengine's
    overrides may add settings)."""
    import difflib
    for key in cfg_options:
        node, parts = cfg.to_dict(), key.split('.')
        for depth, part in enumerate(parts):
            if isinstance(node, (list, tuple)) and part.isdigit():
                node = node[int(part)] if int(part) < len(node) else None
                continue
            if not isinstance(node, dict) or part in node:
                node = node.get(part) if isinstance(node, dict) else None
                continue
            near = difflib.get_close_matches(part, [str(k) for k in node],
                                             1, 0.8)
            if near:
                where = '.'.join(parts[:depth] + [near[0]])
                raise UsageError(
                    f'the override {key!r} names no setting of the config: '
                    f'did you mean {where!r}? (in '
                    f'{opt("cfg_options", where + "=...")})')
            break


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
    try:
        cfg = Config.fromfile(config)
    except SyntaxError as e:
        raise UsageError(
            f'the config {config} has a Python syntax error '
            f'in line {e.lineno}: {e.msg}. Fix that line.') from None
    cfg.launcher = launcher
    old_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    if cfg_options:
        check_override_keys(cfg, cfg_options)
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
                f'automatic mixed precision ({opt("amp")}) needs a CUDA GPU: '
                "mmengine's AmpOptimWrapper scales fp16 gradients on CUDA. "
                f'On the CPU train in fp32 ({opt("amp", False)}).')
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
    own_visualizer(cfg)
    return adapt_to_device(cfg)


def own_visualizer(cfg: Config) -> Config:
    """Give each runner of ``cfg`` a visualizer of its own: mmseg's configs
    name theirs ``'visualizer'``, an mmengine global instance, so a second
    runner in one process (a test after a training, two trainings from
    Python) would reuse the first one's, whose folder is the first run's
    (or is gone). Without the name the runner names it after its
    experiment (config and start time). In place; returns ``cfg``."""
    vis = cfg.get('visualizer')
    if isinstance(vis, dict) and vis.get('name') == 'visualizer':
        vis.pop('name')
    return cfg


def without_pretrained(model_cfg) -> dict:
    """Drop the pretrained initialization of a model config (in place; the
    weights come from a checkpoint). Returns ``model_cfg``."""
    model_cfg.pretrained = None
    if model_cfg.get('backbone'):
        model_cfg.backbone.init_cfg = None
    return model_cfg


__all__ = [
    'replace_syncbn', 'adapt_to_device', 'follow_max_iters', 'load_cfg',
    'own_visualizer', 'without_pretrained'
]
