# Copyright (c) repseg contributors. All rights reserved.
"""What an inference run is made of, as plain data: its settings
(:class:`InferSettings`), the network it runs (:class:`Network`), one
image's outcome (:class:`Result`) and the run's counts
(:class:`Summary`). The driver (:mod:`.driver`) and its executors
(:mod:`.engine`: threads in this process; :mod:`.distributed`: Ray actors)
all speak these."""
import dataclasses
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..deploy.runtimes import MODES, RunInfo, RuntimeModel
from ..errors import UsageError, opt
from ..settings import Settings
from .predict import EXACT
from .recipe import Recipe

#: a run's modes: the runtimes' (latency, throughput) and 'auto' (throughput
#: for more than one image)
INFER_MODES = MODES + ('auto', )


@dataclasses.dataclass
class InferSettings(Settings):
    """How to segment (one field per option of tools/infer.py).

    Args:
        recursive (bool): folders are searched recursively.
        every (int): a video's every N-th frame.
        label_ids (bool): label maps in Cityscapes label ids.
        overlay (bool), opacity (float): overlays (and overlay videos).
        areas (bool): class pixel shares per image in ``areas.csv``.
        mode (str): 'latency' (one request with every thread), 'throughput'
            (several requests in flight) or 'auto' (throughput for more
            than one image).
        threads (int or None): threads in all (streams x threads per
            stream); None: every CPU this process may use.
        cache_dir (str or None): OpenVINO's cache of compiled models.
        device (str): PyTorch models: the device ('cpu', 'cuda:0').
        batch_size (int or None): PyTorch models: images of one size run
            this many at a time (:class:`~repseg.infer.batching.Batcher`);
            None: 4 in throughput mode, 1 in latency mode.
        pipeline (bool): read, preprocess and write on worker threads
            while the network runs (False: one image after the other).
        quiet (bool): no progress bar.
        force (bool): write into an output folder of another run, whose
            outputs are removed first (everything is redone); into a folder
            that is not a run's only beside its files, never over one.
        keep_labels (bool): results carry their label arrays.
        shard (str or None): 'K/N': this process takes the K-th of every N
            inputs in a stable sorted order (N processes, e.g. a Slurm job
            array or N machines on a shared filesystem, split one job into
            one output folder; each resumes through its manifest).
        ray (bool): run on a Ray cluster (:mod:`repseg.infer.distributed`;
            ``threads`` is then each actor's CPUs).
        ray_address (str or None): the cluster to join ('HOST:PORT', or
            'auto'); None with ``ray``: a local cluster.
        stall_timeout (float): seconds an image may go without finishing
            (read, segmented, written) before the run ends with one error
            line naming it and the runtime
            (:class:`~repseg.errors.StalledError`); the limit is 20x the
            slowest image so far when that is longer. What was finished
            stays finished (a rerun resumes).
    """
    recursive: bool = False
    every: int = 1
    label_ids: bool = False
    overlay: bool = False
    opacity: float = 0.5
    areas: bool = False
    mode: str = 'auto'
    threads: Optional[int] = None
    cache_dir: Optional[str] = None
    device: str = 'cpu'
    batch_size: Optional[int] = None
    pipeline: bool = True
    quiet: bool = False
    force: bool = False
    keep_labels: bool = False
    shard: Optional[str] = None
    ray: bool = False
    ray_address: Optional[str] = None
    stall_timeout: float = 120.0

    @property
    def shard_of(self) -> Optional[tuple]:
        """(K, N) of ``shard`` 'K/N', or None."""
        if not self.shard:
            return None
        k, _, n = str(self.shard).partition('/')
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise UsageError(f'{opt("shard", self.shard)} is not K/N with '
                             '1 <= K <= N (e.g. 2/4: the second of four '
                             'shares)')
        return int(k), int(n)

    def check(self) -> None:
        if self.every < 1:
            raise UsageError(f'{opt("every", self.every)}: give 1 (every '
                             'frame) or more')
        if not 0 <= self.opacity <= 1:
            raise UsageError(f'{opt("opacity", self.opacity)}: give a value '
                             'from 0 to 1')
        if self.mode not in INFER_MODES:
            raise UsageError(f'{opt("mode", self.mode)} is not a mode: '
                             f'choose {", ".join(map(repr, INFER_MODES))}')
        self.shard_of   # noqa: B018  (checks it)
        if self.threads is not None and self.threads < 1:
            raise UsageError(f'{opt("threads", self.threads)}: give 1 or '
                             'more')
        if not self.stall_timeout > 0:
            raise UsageError(f'{opt("stall_timeout", self.stall_timeout)}: '
                             'give a number of seconds above 0')
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f'{opt("batch_size", self.batch_size)}: give 1 '
                             'or more')

    def run_mode(self, images: int) -> str:
        """'latency' or 'throughput' for a run of ``images`` images."""
        if self.mode != 'auto':
            return self.mode
        return 'throughput' if images > 1 else 'latency'

    def outputs(self) -> dict:
        """The options that decide what is written (the manifest's)."""
        return dict(every=self.every, label_ids=self.label_ids,
                    overlay=self.overlay, opacity=self.opacity,
                    areas=self.areas)


def file_identity(path: str, **extra) -> dict:
    """What the manifest records of a model file: its path, size and
    modification time (another file in its place is another model)."""
    st = os.stat(path)
    return dict(file=osp.abspath(path), bytes=st.st_size,
                mtime=int(st.st_mtime), **extra)


@dataclasses.dataclass
class Network:
    """A segmentation network ready for :func:`segment`: ``model`` is the
    one numpy wrapper of a model that runs (a deployed file's
    :class:`~repseg.deploy.runtimes.RuntimeModel`, or one the PyTorch path
    builds around the fused segmentor), ``recipe`` how images go in and
    out, ``identity`` what the manifest records of it."""
    model: RuntimeModel
    recipe: Recipe
    identity: dict

    @property
    def info(self) -> RunInfo:
        """What runs (the model's :class:`~repseg.deploy.runtimes.RunInfo`)."""
        return self.model.info

    def run(self, x: np.ndarray) -> np.ndarray:
        """The logits of a normalized ``(1, 3, H, W)`` array."""
        return self.model(x)

    @property
    def labels(self) -> Optional[Callable[[np.ndarray], np.ndarray]]:
        """The class map ``(1, H, W)`` computed by the runtime, used where
        the logits need no further work (a whole image at the network's
        own size); None where the runtime computes only logits."""
        return self.model.argmax if self.model.has_labels else None

    def close(self) -> None:
        """Release what the model holds (e.g. the batching threads of the
        PyTorch path); the network is not used afterwards."""
        self.model.close()


@dataclasses.dataclass
class Result:
    """One image's outcome: ``status`` 'done', 'skipped' (done by an
    earlier run) or 'failed' (``reason``); ``files`` written; ``labels``
    (with ``keep_labels``, in this process: a Ray run's results carry
    none); ``fit``: how the input met a fixed-size model file ('exact', or
    'resized' to its size); ``exact_size``: of a resized one, the (H, W) a
    fixed-size file must take to run it exactly; ``shares``: with
    ``areas``, each class's share of its pixels (its row of
    ``areas.csv``)."""
    input: str
    key: str
    status: str
    files: Dict[str, str] = dataclasses.field(default_factory=dict)
    reason: str = ''
    labels: Optional[np.ndarray] = None
    fit: str = EXACT
    exact_size: Optional[Tuple[int, int]] = None
    shares: Optional[List[float]] = None


@dataclasses.dataclass
class Summary:
    """The run's counts and speed."""
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    #: None where it is not measured (a Ray run: the workers compute)
    busy_seconds: Optional[float] = 0.0
    #: a Ray run: seconds before the first actor began segmenting (the
    #: cluster, the actors and their models starting); None elsewhere
    startup_seconds: Optional[float] = None
    fits: Dict[str, int] = dataclasses.field(default_factory=dict)
    #: 'HxW' -> how many resized images that size runs exactly
    exact_sizes: Dict[str, int] = dataclasses.field(default_factory=dict)
    failures_file: Optional[str] = None
    videos: List[str] = dataclasses.field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def steady_images_per_s(self) -> float:
        """Images/s after the start-up (:attr:`startup_seconds`)."""
        steady = self.seconds - (self.startup_seconds or 0.0)
        return self.done / steady if steady > 0 else 0.0

    @property
    def busy_share(self) -> float:
        """Share of the wall time the network was computing."""
        return min(1.0, self.busy_seconds / self.seconds) \
            if self.seconds and self.busy_seconds else 0.0

    def lines(self) -> List[str]:
        busy = (f', the network busy {100 * self.busy_share:.0f}% of the '
                'time') if self.busy_seconds is not None else ''
        if self.startup_seconds is not None:
            busy += (f'; {self.steady_images_per_s:.2f} images/s after '
                     f'Ray\'s start-up ({self.startup_seconds:.1f} s)')
        out = [f'{self.done} done, {self.skipped} skipped (done before), '
               f'{self.failed} failed in {self.seconds:.1f} s: '
               f'{self.images_per_s:.2f} images/s end to end{busy}']
        odd = sum(n for k, n in self.fits.items() if k != EXACT)
        if odd:
            sizes = ', '.join(f'{k} ({n})' for k, n in sorted(
                self.exact_sizes.items(), key=lambda kv: -kv[1])[:3])
            more = len(self.exact_sizes) - 3
            sizes += f' and {more} more' if more > 0 else ''
            out.append(
                f'{odd} image(s) did not fit the model file\'s fixed size '
                'and were resized to it, their logits back (close to, not '
                'exactly, what the config computes). To run every size '
                'exactly, export a file that takes any size: tools/export.py '
                'CONFIG CHECKPOINT OUT --dynamic-shape (tools/quantize.py '
                'too); or a fixed file at the size the config\'s test resize '
                f'gives them (--shape H W: {sizes}); or use the config and '
                'checkpoint')
        if self.failures_file:
            out.append(f'failures listed in {self.failures_file}')
        return out


__all__ = ['InferSettings', 'Network', 'Result', 'Summary', 'file_identity']
