"""A hook the two-process tests load into their training runs (through the
config's custom_imports): every rank saves its own parameters before the
first and after the last training iteration, so a test can check that both
ranks stepped and ended with identical weights."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS


def _params(runner):
    model = runner.model
    if is_model_wrapper(model):
        model = model.module
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@HOOKS.register_module()
class SaveRankWeightsHook(Hook):

    def before_train(self, runner):
        self._first = _params(runner)

    def after_train(self, runner):
        torch.save(dict(before=self._first, after=_params(runner),
                        iter=runner.iter),
                   osp.join(runner.work_dir, f'rank{get_rank()}_weights.pt'))
