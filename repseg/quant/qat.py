# Copyright (c) repseg contributors. All rights reserved.
"""Quantization-aware fine-tuning (QAT) of the fused segmentor, for every
runtime at once:

1. :func:`qat_model`: NNCF's PyTorch quantization (``nncf.quantize`` on
   the torch module) of the fused, equalized segmentor: fake quantizers
   (trainable scales) where NNCF's post-training quantization of the
   OpenVINO file puts them (the same algorithm and ignored scope: the
   pyramid pooling's matrix products and the squeeze-and-excitations
   stay in float), initialized on the same calibration inputs;
2. :func:`fine_tune`: mmengine's iteration loop on the config's train
   pipeline (train images held out of the control set only), the decode
   head's loss (the fused segmentor has no auxiliary head), checkpoints
   in ``job.work_dir`` and resume after a kill (mmengine's own resume,
   with the random state of the data pipeline and dropout restored so
   that a resumed run ends where an uninterrupted one does), the log and
   its progress line;
3. :func:`export_qat`: one ONNX file in QuantizeLinear / DequantizeLinear
   (QDQ) form, which both runtimes read (ONNX Runtime runs it as
   written; OpenVINO converts it to the same IR as NNCF's FakeQuantize
   export: identical outputs, measured), with the file's record.

NNCF compiles its CPU kernels (a PyTorch C++ extension) the first time a
process uses them: about 45 s on a 2-core machine, then cached by torch
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) for
every later process. NNCF's own 60 s limit on that build is raised here
(:data:`EXTENSION_TIMEOUT`) so that a loaded machine does not fail it.
"""
import copy
import dataclasses
import json
import math
import os
import os.path as osp
import random
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import IterBasedTrainLoop

from ..deploy.build import SegForward
from ..deploy.onnx import exportable, to_onnx
from ..deploy.runtimes.base import SE_NODES
from ..errors import BackendError, UsageError, opt
from .calibration import _train_dataset_cfg

#: the default learning rate of QAT (SGD, poly decay to 0, gradients
#: clipped at norm 1). Measured on the demo's A0 (200 iterations, 60 QAT
#: iterations, fp32 targets, control-set agreement with fp32, ONNX
#: Runtime / OpenVINO, post-training 96.92% / 96.66%): lr 1e-3 93.38% /
#: 93.36% (the weights move away from fp32's labels), 1e-4 96.85% /
#: 96.82%, 1e-5 96.90% / 96.85% (within 0.05 points of 1e-4: hardly
#: fine-tuned at all); 1e-4 is the largest rate that did not lose
DEFAULT_LR = 1e-4
#: the largest gradient norm of a QAT step (clipped above)
CLIP_NORM = 1.0
#: seconds NNCF may take to build its CPU extension (its default is 60,
#: which a loaded 2-core machine can exceed)
EXTENSION_TIMEOUT = 900
#: ONNX operation types (the runtimes' names, e.g. OpenVINO's
#: ``ignored_types``) -> the torch functions NNCF's torch graph names them
_TORCH_OPS = dict(MatMul=('matmul', ), Gemm=('linear', 'addmm'),
                  Conv=('conv2d', ), ConvTranspose=('conv_transpose2d', ),
                  Add=('add', ), Mul=('mul', ), Concat=('cat', ))
#: calibration statistics -> NNCF's RangeEstimatorParametersSet
_RANGES = dict(minmax='MINMAX', mean_minmax='MEAN_MINMAX')
#: what QAT's loss can pull the quantized model to (:class:`QatJob`)
TARGETS = ('fp32', 'labels')
#: the operation types QAT always keeps in float: PSPNet's pooling
#: products (their matrices depend on the input size)
ALWAYS_FLOAT = ('MatMul', )


@dataclasses.dataclass
class QatJob:
    """One quantization-aware fine-tuning run.

    Args:
        iters (int): training iterations (> 0).
        work_dir (str): checkpoints and the log (a run killed there
            resumes from its last checkpoint when started again with the
            same job).
        lr (float): the learning rate (SGD with the config's momentum and
            weight decay, poly decay to 0 over ``iters``).
        seed (int): the seed of the data order, the pipeline's random
            transforms and dropout.
        pool (sequence of int or None): the train images to fine-tune on
            (indices of the train split; None: all). The control set is
            left out by the caller.
        batch_size (int or None): images per iteration (None: the
            config's).
        checkpoint_interval (int or None): iterations between checkpoints
            (None: a quarter of the run).
        ignored_types (sequence of str): operation types (ONNX names, as
            the runtimes' settings give them) kept in float besides
            :data:`ALWAYS_FLOAT` and the squeeze-and-excitations.
        preset (str): NNCF's preset, 'performance' (symmetric) or
            'mixed' (asymmetric activations).
        calib_method (str): the statistic of the initial activation
            ranges ('minmax', 'mean_minmax'; others: 'minmax').
        targets (str): what the loss pulls the quantized model to:
            'fp32' (the default: the fp32 model's own labels of each
            training crop, the ground truth's ignored pixels left out:
            INT8 that agrees with its fp32 model) or 'labels' (the
            ground truth: fine-tuning that also trains on; on the demo's
            A0 trained 200 iterations, 60 such iterations took the INT8
            model further from fp32's labels than post-training INT8).
    """
    iters: int
    work_dir: str
    lr: float = DEFAULT_LR
    seed: int = 0
    pool: Optional[Sequence[int]] = None
    batch_size: Optional[int] = None
    checkpoint_interval: Optional[int] = None
    ignored_types: Sequence[str] = ()
    preset: str = 'performance'
    calib_method: str = 'minmax'
    targets: str = 'fp32'

    def identity(self) -> dict:
        """What a resumed run must share with the killed one."""
        d = dataclasses.asdict(self)
        d.pop('work_dir')
        d['pool'] = list(self.pool) if self.pool is not None else None
        d['ignored_types'] = list(self.ignored_types)
        return d


@dataclasses.dataclass
class QatResult:
    """What :func:`fine_tune` made: the fine-tuned quantization-simulated
    network (``net``: a segmentor's ``encode_decode`` as ``forward(x)``,
    fake quantizers in it), the iterations run in this process
    (``ran``; fewer than ``iters`` after a resume from ``resumed_at``),
    wall ``seconds`` and seconds per iteration, the batch size and the
    number of train images, the log file."""
    net: nn.Module
    iters: int
    ran: int
    resumed_at: int
    seconds: float
    seconds_per_iter: Optional[float]
    batch_size: int
    train_images: int
    lr: float
    seed: int
    log_file: Optional[str] = None


def _nncf():
    """NNCF's torch side, or a BackendError saying how to install it."""
    os.environ.setdefault('NNCF_EXTENSION_LOAD_TIMEOUT',
                          str(EXTENSION_TIMEOUT))
    try:
        import nncf
        import nncf.torch  # noqa: F401
    except Exception as e:  # noqa: B902  (ImportError, broken installs)
        raise BackendError(
            'quantization-aware fine-tuning needs NNCF with its PyTorch '
            f'support, which cannot be imported here ({type(e).__name__}: '
            f'{str(e)[:200]}): pip install nncf (or run '
            'scripts/install.sh)') from None
    return nncf


def torch_types(types: Sequence[str]) -> List[str]:
    """The torch function names of ONNX operation ``types`` (as NNCF's
    torch graph names its nodes; an unknown type in lower case)."""
    out = []
    for t in types:
        out += _TORCH_OPS.get(t, (t.lower(), ))
    return list(dict.fromkeys(out))


def qat_model(segmentor: nn.Module, inputs: Sequence[np.ndarray],
              job: QatJob) -> nn.Module:
    """The quantization-simulated copy of the fused ``segmentor``:
    ``nncf.quantize`` of its ``encode_decode`` (adaptive pooling as the
    exported graph computes it, :func:`repseg.deploy.onnx.exportable`)
    calibrated on ``inputs`` (normalized ``(1, 3, H, W)`` arrays), with
    the post-training file's quantizer placement (NNCF's algorithm; the
    pooling products, ``job.ignored_types`` and the
    squeeze-and-excitations in float; 8-bit weights everywhere so that
    the export is plain QDQ). The result's weights and quantizer scales
    are trainable."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters, OverflowFix)
    from nncf.quantization.range_estimator import \
        RangeEstimatorParametersSet
    if not inputs:
        raise UsageError('quantization-aware fine-tuning needs at least '
                         'one calibration input')
    net = exportable(SegForward(copy.deepcopy(segmentor)),
                     dynamic_shape=True)
    net.eval()
    ranges = getattr(RangeEstimatorParametersSet,
                     _RANGES.get(job.calib_method, 'MINMAX'))
    types = torch_types(list(ALWAYS_FLOAT) + list(job.ignored_types))
    calib = nncf.Dataset([torch.as_tensor(x).float() for x in inputs])
    with torch.no_grad():
        q = nncf.quantize(
            net, calib, subset_size=len(inputs),
            preset=getattr(nncf.QuantizationPreset, job.preset.upper()),
            ignored_scope=nncf.IgnoredScope(
                types=types, patterns=[f'.*{SE_NODES}.*'], validate=False),
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=ranges,
                # full 8-bit weights: QDQ (ONNX Runtime) has no 7-bit
                # weights of NNCF's overflow fix
                overflow_fix=OverflowFix.DISABLE))
    return q


def quantizers(net: nn.Module) -> Dict[str, nn.Module]:
    """The fake quantizers of a :func:`qat_model` network by name."""
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer
    return {n: m for n, m in get_hook_storage(net).named_hooks()
            if isinstance(m, BaseQuantizer)}


class QatSegmentor(BaseModel):
    """The mmengine model the QAT loop trains: the quantization-simulated
    network (``net``, whose logits are at input size) and the decode
    head's loss on them (:meth:`loss_by_feat`, which resizes the logits to
    the labels' size: the same size here)."""

    def __init__(self, net: nn.Module, data_preprocessor: nn.Module,
                 teacher: Optional[nn.Module] = None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.net = net
        # not a submodule: neither trained nor in the checkpoints
        self.__dict__['teacher'] = teacher

    def init_weights(self) -> None:
        """Nothing: the weights are the fused model's (the Runner would
        initialize them anew)."""

    @property
    def head(self) -> nn.Module:
        return self.net.segmentor.decode_head

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        logits = self.net(inputs)
        if mode == 'loss':
            if self.teacher is not None:
                self._fp32_targets(inputs, data_samples)
            return self.head.loss_by_feat(logits, data_samples)
        return logits

    @torch.no_grad()
    def _fp32_targets(self, inputs: torch.Tensor, data_samples) -> None:
        """Each sample's labels replaced by the fp32 model's own (the
        ground truth's ignored pixels, e.g. the padding, kept)."""
        labels = self.teacher(inputs).argmax(1, keepdim=True)
        ignore = self.head.ignore_index
        for sample, mine in zip(data_samples, labels):
            gt = sample.gt_sem_seg.data
            h, w = gt.shape[-2:]
            mine = mine[..., :h, :w].to(gt.dtype)
            sample.gt_sem_seg.data = torch.where(gt == ignore, gt, mine)


def _rng_state() -> dict:
    """The global random state (torch, numpy, random) as tensors and
    plain numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return dict(torch=torch.get_rng_state(),
                numpy=[kind, torch.from_numpy(keys.astype(np.int64)),
                       int(pos), int(has_gauss), float(gauss)],
                python=[version, list(internal), py_gauss])


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos,
                         has_gauss, gauss))
    version, internal, py_gauss = state['python']
    random.setstate((version, tuple(internal), py_gauss))


class RngStateHook(Hook):
    """Keeps the global random state in every checkpoint and hands it to
    :class:`QatLoop` when a run resumes."""
    priority = 'VERY_LOW'

    def __init__(self):
        self.resumed_state = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['repseg_rng_state'] = _rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.resumed_state = checkpoint.get('repseg_rng_state')


class FiniteLossHook(Hook):
    """Stops a run whose loss is not finite, with one line (a model
    whose activations are huge can diverge even clipped)."""
    priority = 'HIGHEST'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        loss = (outputs or {}).get('loss')
        if loss is not None and not math.isfinite(float(loss)):
            raise UsageError(
                f'quantization-aware fine-tuning diverged at iteration '
                f'{batch_idx + 1} (loss {float(loss)}): give a smaller '
                f'{opt("qat_lr", None)} (default {DEFAULT_LR:g})')


class QatLoop(IterBasedTrainLoop):
    """mmengine's iteration loop, except that a resumed run, after
    replaying the data order of the iterations already done, restores the
    random state the killed run had at its checkpoint (the pipeline's
    random transforms and dropout then draw what they drew there)."""

    def run(self) -> nn.Module:
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        self.started_at = self._iter
        if self._iter > 0:
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            hook = next((h for h in self.runner.hooks
                         if isinstance(h, RngStateHook)), None)
            if hook is not None and hook.resumed_state is not None:
                _set_rng_state(hook.resumed_state)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model


def _train_loader(cfg: Config, job: QatJob) -> dict:
    """The config's train dataloader on the pool's images (in this
    process: the random state of the pipeline is the loop's)."""
    loader = copy.deepcopy(cfg.train_dataloader)
    ds = copy.deepcopy(_train_dataset_cfg(cfg))
    ds['pipeline'] = copy.deepcopy(ds.get('pipeline') or
                                   cfg.train_dataloader.dataset.pipeline)
    if job.pool is not None:
        ds['indices'] = list(job.pool)
    loader['dataset'] = ds
    loader['num_workers'] = 0
    loader['persistent_workers'] = False
    if job.batch_size:
        loader['batch_size'] = int(job.batch_size)
    return loader


def _resumable(work_dir: str, job: QatJob, log: Callable[[str], None]
               ) -> bool:
    """Whether ``work_dir`` holds checkpoints of this very job (then the
    run resumes from the last); writes the job's description there."""
    path = osp.join(work_dir, 'qat_job.json')
    mine = job.identity()
    same = False
    if osp.isfile(path) and osp.isfile(osp.join(work_dir,
                                                'last_checkpoint')):
        try:
            with open(path) as f:
                same = json.load(f) == mine
        except (OSError, ValueError):
            same = False
        if not same:
            log(f'note: the QAT checkpoints in {work_dir} are of another '
                'run (other settings): fine-tuning starts over')
    os.makedirs(work_dir, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(mine, f, indent=2)
    return same


def check_qat_options(targets: str, lr: float) -> None:
    """Refuse a QAT target or learning rate that is no such thing (one
    line, :class:`UsageError`)."""
    if targets not in TARGETS:
        raise UsageError(f'{opt("qat_targets", targets)} is not a target: '
                         f'give {" or ".join(TARGETS)}')
    if not lr > 0:
        raise UsageError(f'{opt("qat_lr", lr)} is a learning rate: give a '
                         f'positive number (default {DEFAULT_LR:g})')


def check_qat_job(job: QatJob, train_images: int,
                  batch_size: int) -> Optional[str]:
    """Why ``job`` cannot fine-tune on ``train_images`` images in batches
    of ``batch_size`` (one line), or None. A bad setting is refused."""
    if job.iters < 1:
        raise UsageError(f'{opt("qat", job.iters)} counts iterations: give '
                         '1 or more (0: no quantization-aware fine-tuning)')
    check_qat_options(job.targets, job.lr)
    if train_images < batch_size:
        return (f'no QAT file: a batch takes {batch_size} train images and '
                f'only {train_images} are left for fine-tuning (the '
                'control set is held out); add train images, hold out '
                f'fewer ({opt("control_images", None)}) or train smaller '
                'batches')
    return None


def fine_tune(cfg: Config, segmentor: nn.Module,
              inputs: Sequence[np.ndarray], job: QatJob,
              log: Callable[[str], None] = print) -> QatResult:
    """Quantization-aware fine-tuning of the fused (equalized) ``segmentor``
    as ``job`` says (see the module's text); ``inputs``: the calibration
    inputs of the initial quantizer ranges. A run killed in
    ``job.work_dir`` resumes from its last checkpoint (mmengine's resume)
    and ends with what an uninterrupted run with the same job ends with.
    """
    from mmengine.runner import Runner
    from ..fileio import register_safe_globals
    register_safe_globals()
    loader = _train_loader(cfg, job)
    batch = int(loader['batch_size'])
    from .calibration import build_dataset
    n = len(build_dataset(loader, []))
    why = check_qat_job(job, n, batch)
    if why:
        raise UsageError(why)
    resume = _resumable(job.work_dir, job, log)
    log(f'quantization-aware fine-tuning: {job.iters} iterations of '
        f'{batch} images from {n} train images, lr {job.lr:g}, seed '
        f'{job.seed}; checkpoints in {job.work_dir}')
    start = time.perf_counter()
    net = qat_model(segmentor, inputs, job)
    teacher = None
    if job.targets == 'fp32':
        teacher = SegForward(copy.deepcopy(segmentor)).eval()
        teacher.requires_grad_(False)
    model = QatSegmentor(net, copy.deepcopy(segmentor.data_preprocessor),
                         teacher)
    optim = copy.deepcopy(cfg.get('optim_wrapper') or dict(
        type='OptimWrapper', optimizer=dict(type='SGD', momentum=0.9)))
    optim['optimizer']['lr'] = job.lr
    # the quantizers' scale gradients can be large where activations
    # are: clipped, a short run at a small rate never jumps away
    optim['clip_grad'] = dict(max_norm=CLIP_NORM, norm_type=2)
    interval = job.checkpoint_interval or max(1, job.iters // 4)
    hook = RngStateHook()
    runner = Runner(
        model=model, work_dir=job.work_dir, train_dataloader=loader,
        train_cfg=dict(type=QatLoop, max_iters=job.iters),
        optim_wrapper=optim,
        param_scheduler=[dict(type='PolyLR', eta_min=0.0, power=0.9,
                              begin=0, end=job.iters, by_epoch=False)],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', log_metric_by_epoch=False,
                        interval=max(1, min(50, job.iters // 10))),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=interval, max_keep_ckpts=2,
                            save_last=True),
            sampler_seed=dict(type='DistSamplerSeedHook')),
        custom_hooks=[hook, FiniteLossHook()], randomness=dict(seed=job.seed),
        resume=resume, load_from=None, default_scope='mmseg',
        log_processor=dict(by_epoch=False),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        experiment_name=f'qat_{time.strftime("%Y%m%d_%H%M%S")}')
    prepared = time.perf_counter() - start
    runner.train()
    seconds = time.perf_counter() - start
    done = runner.iter
    resumed_at = getattr(runner.train_loop, 'started_at', 0)
    ran = job.iters - resumed_at
    if resumed_at:
        log(f'resumed at iteration {resumed_at} from the checkpoints in '
            f'{job.work_dir}')
    net.eval()
    log_file = osp.join(runner.log_dir, f'{runner.timestamp}.log')
    result = QatResult(
        net=net, iters=done, ran=ran, resumed_at=resumed_at,
        seconds=seconds,
        seconds_per_iter=(seconds - prepared) / ran if ran else None,
        batch_size=batch, train_images=n, lr=job.lr, seed=job.seed,
        log_file=log_file)
    return result


def export_qat(net: nn.Module, path: str, x: torch.Tensor,
               dynamic_shape: bool = False,
               record: Optional[dict] = None) -> str:
    """Write the fine-tuned network ``net`` (:func:`qat_model`) as an ONNX
    file in QuantizeLinear / DequantizeLinear form (traced at the size of
    ``x``; H and W dynamic with ``dynamic_shape``), with ``record`` in its
    metadata; every runtime's ``from_onnx`` takes it (ONNX Runtime runs
    it as written, OpenVINO converts the pairs to its FakeQuantize)."""
    _nncf()
    from nncf.torch.quantization.layers import QuantizerExportMode
    was_training = net.training
    net.eval()
    found = quantizers(net)
    for q in found.values():
        q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    try:
        with torch.no_grad():
            to_onnx(net, x, path, dynamic_shape=dynamic_shape,
                    record=record)
    finally:
        for q in found.values():
            q.set_export_mode(QuantizerExportMode.FAKE_QUANTIZE)
        net.train(was_training)
    return path


__all__ = ['DEFAULT_LR', 'ALWAYS_FLOAT', 'QatJob', 'QatResult',
           'QatSegmentor', 'check_qat_options', 'qat_model', 'quantizers',
           'fine_tune', 'export_qat', 'check_qat_job', 'torch_types',
           'TARGETS']
