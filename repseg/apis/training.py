# Copyright (c) repseg contributors. All rights reserved.
"""Training with mmengine's Runner after the pre-flight checks: strict
``load_from``, one clear error for Ctrl-C, an unreadable image or a
failed download of pretrained weights."""
import glob
import os.path as osp
import re
from urllib.error import URLError

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from ..deploy.build import check_model
from ..engine.checkpoint import load_any_checkpoint
from ..engine.dist import finish_distributed
from ..errors import DatasetError, UsageError, opt
from .checks import (check_data, check_pretrained, check_resume_checkpoint,
                     check_work_dir, dataset_roots)


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


def train(cfg: Config, check: bool = True,
          allow_unsafe: bool = False) -> Runner:
    """Train with mmengine's Runner after the pre-flight checks; returns the
    runner. Ctrl-C stops with a :class:`UsageError` that says how to
    resume."""
    if check:
        check_data(cfg)
        check_pretrained(cfg)
        check_work_dir(cfg)
        model = check_model(cfg)
        load_from = cfg.get('load_from')
        if load_from and not cfg.get('resume') and '://' not in str(
                load_from):
            # a missing or mismatching file is found before the Runner
            # prints its environment
            load_any_checkpoint(model, str(load_from),
                                allow_unsafe=allow_unsafe)
        del model
    if cfg.get('resume'):
        check_resume_checkpoint(cfg, allow_unsafe)
    runner = Runner.from_cfg(cfg)
    # mmengine formats the whole config with yapf into every checkpoint:
    # seconds per save, and its bare ``except:`` turns a ctrl-c that lands
    # there into a SyntaxError. The unformatted text is the same Python.
    object.__setattr__(runner.cfg, '_format_python_code', False)
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
                f'with {opt("cfg_options", "model.pretrained=None")}.'
            ) from None
        bad = re.search(r'failed to load image: (\S+)', str(e))
        if bad is None:
            raise
        roots = sorted({r for r, _ in dataset_roots(cfg, (
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
               f'{opt("work_dir", cfg.work_dir)} {opt("resume")}' if saved else
               'No checkpoint was written yet; start again to train.')
        ) from None
    if cfg.get('launcher', 'none') != 'none':
        finish_distributed()
    return runner


__all__ = ['train', 'strict_load_from']
