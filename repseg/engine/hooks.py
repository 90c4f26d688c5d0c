# Copyright (c) repseg contributors. All rights reserved.
"""Evaluate the fused (deployed) model during validation and testing."""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS

from ..ops.nnpack_conv import (CONV_IMPLS, count_nnpack_convs,
                               count_nnpack_runs, is_nnpack,
                               resolve_conv_impl, use_nnpack_convs)
from ..reparam import (compare_outputs, describe, find_unfused,
                       reparameterize_model)


def _logits(samples) -> list:
    return [s.seg_logits.data for s in samples]


@HOOKS.register_module()
class FusedEvalHook(Hook):
    """Run every validation and test on the re-parameterized model.

    Before each validation/test epoch the hook builds a fused *copy* of the
    model with :func:`repseg.reparameterize_model` (RepVGG blocks become one
    3x3 conv, conv-BN pairs are folded) and hands it to the loop in place of
    ``runner.model``; after the epoch the live model is put back. Training
    therefore continues on the unfused multi-branch model, whose parameters,
    buffers and mode the hook never changes.

    Once per evaluation it logs that the fused model is used and the max
    |fused - unfused| of the segmentation logits on the first batch (both in
    eval mode). A model that is already fused (built from a deploy config or
    loaded from a fused checkpoint) is evaluated as it is.

    Args:
        check_equivalence (bool): Compare fused and unfused outputs on the
            first batch of every evaluation (one extra unfused forward).
            Default: True.
        conv_impl (str): how the fused model's 3x3 convs run: ``'nnpack'``
            (Winograd on the CPU, :func:`repseg.ops.use_nnpack_convs`),
            ``'nnpack-precomputed'`` (the same, keeping the kernel
            transforms), ``'native'`` (PyTorch's default) or ``'auto'``
            (``'nnpack'`` when the model is fp32 on the CPU and NNPACK is
            available).
            Default: 'auto'.

    Attributes:
        last_max_diff (float | None): max |fused - unfused| of the last check.
        last_max_abs (float | None): max |unfused| on that batch.
        last_report (dict | None): the whole comparison of the last check
            (:func:`repseg.reparam.compare_outputs`).
        last_fused_model: the fused model used by the last evaluation (kept
            for inspection until the next one; None when the model was
            already fused).
        last_nnpack_runs (dict | None): what ran NNPACK in the last
            evaluation: ``convs`` (modules that ran it at least once),
            ``nnpack_calls`` and ``native_calls``.
    """

    priority = 'LOW'   # after e.g. EMAHook has swapped in its weights

    def __init__(self, check_equivalence: bool = True,
                 conv_impl: str = 'auto'):
        if conv_impl not in CONV_IMPLS:
            raise ValueError(f'FusedEvalHook: conv_impl must be one of '
                             f'{list(CONV_IMPLS)}, got {conv_impl!r}')
        self.check_equivalence = check_equivalence
        self.conv_impl = conv_impl
        self.last_max_diff: Optional[float] = None
        self.last_max_abs: Optional[float] = None
        self.last_fused_model = None
        self.last_nnpack_runs: Optional[dict] = None
        self.last_report: Optional[dict] = None
        self._live = None
        self._pending_check = False

    # -- swapping -----------------------------------------------------------
    def _conv_impl(self, model) -> str:
        param = next(model.parameters(), None)
        return resolve_conv_impl(
            self.conv_impl, param.device if param is not None else 'cpu',
            param.dtype if param is not None else torch.float32)

    def before_run(self, runner) -> None:
        # an explicit conv_impl='nnpack' that cannot run here fails now,
        # not at the first validation
        live = runner.model
        self._conv_impl(live.module if is_model_wrapper(live) else live)

    def _swap_in(self, runner, phase: str) -> None:
        live = runner.model
        src = live.module if is_model_wrapper(live) else live
        todo = find_unfused(src)
        impl = self._conv_impl(src)
        if not todo and impl == 'native':
            print_log(
                f'[FusedEvalHook] {phase}: the model is already fused '
                '(deploy form); evaluating it as it is.', logger='current')
            self.last_fused_model = None
            self._live = None
            return
        fused = reparameterize_model(src, inplace=False) if todo else src
        fused = use_nnpack_convs(fused, impl, inplace=fused is not src)
        self._live = live
        self.last_fused_model = fused
        runner.model = fused
        self._pending_check = self.check_equivalence
        if is_nnpack(impl):
            count_nnpack_runs(fused, reset=True)
            n_nnpack, n_all = count_nnpack_convs(fused)
            convs = (f' {n_nnpack} of its {n_all} convs can run NNPACK '
                     f'Winograd (conv_impl={impl!r}) where the input is large '
                     'enough to pay off.')
        else:
            convs = ''
        training = (' Training continues on the unfused model.'
                    if phase == 'validation' else '')
        what = (f'evaluating the FUSED model (repseg.reparameterize_model; '
                f'{len(todo)} multi-branch blocks and conv-BN pairs folded '
                f'into plain convs).{training}'
                if todo else 'the model is already fused (deploy form).')
        print_log(f'[FusedEvalHook] {phase}: {what}{convs}',
                  logger='current')

    def _swap_out(self, runner, phase: str) -> None:
        fused = self.last_fused_model
        if fused is not None and count_nnpack_convs(fused)[0]:
            ran, calls, native = count_nnpack_runs(fused)
            self.last_nnpack_runs = dict(convs=ran, nnpack_calls=calls,
                                         native_calls=native)
            print_log(
                f'[FusedEvalHook] {phase}: NNPACK ran in {ran} of '
                f'{count_nnpack_convs(fused)[0]} eligible convs ({calls} '
                'calls);'
                f' {native} conv calls ran PyTorch\'s conv (inputs below the '
                'size where NNPACK pays off, see repseg.ops.nnpack_pays_off).',
                logger='current')
        if self._live is not None:
            runner.model = self._live
            self._live = None

    @torch.no_grad()
    def _check(self, runner, data_batch) -> None:
        if not self._pending_check:
            return
        self._pending_check = False
        src = self._live.module if is_model_wrapper(self._live) else self._live
        was_training = src.training
        src.eval()
        try:
            ref = _logits(src.test_step(data_batch))
        finally:
            src.train(was_training)
        out = _logits(runner.model.test_step(data_batch))
        report = compare_outputs(ref, out)
        self.last_report = report
        self.last_max_diff = report['max_abs_diff']
        self.last_max_abs = report['max_abs']
        print_log(
            '[FusedEvalHook] logits on one batch: '
            f"{describe(report, 'fused - unfused')}.", logger='current')

    # -- hook points --------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        self._swap_in(runner, 'validation')

    def before_val_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._check(runner, data_batch)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._swap_out(runner, 'validation')

    def before_test_epoch(self, runner) -> None:
        self._swap_in(runner, 'test')

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._check(runner, data_batch)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._swap_out(runner, 'test')
