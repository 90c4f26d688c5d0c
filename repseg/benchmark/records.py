# Copyright (c) repseg contributors. All rights reserved.
"""The benchmark's results as typed records: one :class:`ModelResult` per
model, holding one :class:`Run` per timed form (PyTorch fused / native
convs / bf16 / unfused, each runtime in each precision). The timing loop
fills them, the report reads them, ``benchmark.json`` is their
``to_dict()``."""
import dataclasses
from typing import Dict, Optional

from ..deploy.runs import PYTORCH, run_label
from ..deploy.runtimes import RunInfo

#: labels of the PyTorch runs; runtime runs are labelled ``<runtime>`` (fp32)
#: and ``<runtime>_<precision>`` (:func:`repseg.deploy.runs.run_label`)
FUSED, NATIVE, BF16, UNFUSED = 'fused', 'native', 'bf16', 'unfused'


@dataclasses.dataclass
class Run:
    """One timed form of a model.

    Args:
        runtime (str): :data:`PYTORCH` or a registered runtime's name.
        precision (str): the precision asked for ('fp32', 'bf16', 'int8').
        precision_ran (str): what the runtime says it ran.
        conv_impl (str): PyTorch runs: how the 3x3 convs ran ('nnpack',
            'nnpack-precomputed', 'native').
        kernels (str): runtimes: the convolution kernels they chose.
        threads (int): runtimes: their threads per stream.
        streams, requests (int): runtimes: parallel streams and requests
            that can be in flight.
        img_per_s, latency_ms, latency_iqr_ms, latency_min_ms (float): the
            timing (per image; median, interquartile range, minimum).
        peak_mem_mib (float): peak memory of one forward (None where it
            cannot be measured).
        kernel_transforms_mib (float): NNPACK's kept kernel transforms.
        nnpack_convs_ran, nnpack_calls, native_conv_calls (int): what
            really ran NNPACK in the timed forwards (PyTorch runs).
        max_abs_diff, max_abs_logit, relative_diff, argmax_agreement
            (float): its output against the reference (the fused PyTorch
            fp32 run; for the unfused run: fused against unfused).
        float_layers (int): INT8 runs: convolutions and matrix products
            left in float.
        vs_pytorch (float): its speed over the fused PyTorch fp32 run's.
        vs_pytorch_native (float): its speed over the native-conv run's.
        profile (dict): time by layer kind and part (``--profile``).
        equalize (str): runtime INT8 runs of the equalized model: the
            method (:func:`repseg.quant.equalize.equalize_`), else None.
        file (str): runtimes: the model file timed (a temporary file).
        throughput_img_per_s, throughput_streams, throughput_requests,
        throughput_vs_latency: runtimes with ``--throughput N``: images/s
            with N images in flight in throughput mode, the streams and
            requests the runtime chose (read back), and the ratio to the
            latency-mode images/s.
    """
    runtime: str = PYTORCH
    precision: str = 'fp32'
    precision_ran: Optional[str] = None
    conv_impl: Optional[str] = None
    kernels: str = ''
    threads: Optional[int] = None
    streams: Optional[int] = None
    requests: Optional[int] = None
    img_per_s: Optional[float] = None
    latency_ms: Optional[float] = None
    latency_iqr_ms: Optional[float] = None
    latency_min_ms: Optional[float] = None
    peak_mem_mib: Optional[float] = None
    kernel_transforms_mib: Optional[float] = None
    nnpack_convs_ran: Optional[int] = None
    nnpack_calls: Optional[int] = None
    native_conv_calls: Optional[int] = None
    max_abs_diff: Optional[float] = None
    max_abs_logit: Optional[float] = None
    relative_diff: Optional[float] = None
    argmax_agreement: Optional[float] = None
    float_layers: Optional[int] = None
    vs_pytorch: Optional[float] = None
    vs_pytorch_native: Optional[float] = None
    profile: Optional[dict] = None
    equalize: Optional[str] = None
    file: Optional[str] = None
    throughput_img_per_s: Optional[float] = None
    throughput_streams: Optional[int] = None
    throughput_requests: Optional[int] = None
    throughput_vs_latency: Optional[float] = None

    @classmethod
    def of(cls, info: RunInfo, **fields) -> 'Run':
        """The run of a runtime model from what it says it runs."""
        return cls(runtime=info.runtime,
                   precision=info.precision_asked or info.precision,
                   precision_ran=info.precision, kernels=info.kernels,
                   float_layers=len(info.float_layers),
                   threads=info.threads, streams=info.streams,
                   requests=info.requests, **fields)

    def set_check(self, check: dict) -> None:
        """The fields of :func:`repseg.reparam.compare_outputs`'s result."""
        self.max_abs_diff = check['max_abs_diff']
        self.max_abs_logit = check['max_abs']
        self.relative_diff = check['relative']
        self.argmax_agreement = check['argmax_agreement']


def is_resnet(name: str) -> bool:
    """Whether a backbone type (or a row's name) is a ResNet baseline's."""
    return 'ResNet' in name


@dataclasses.dataclass
class ModelResult:
    """One model of the benchmark and its runs (``runs[label]``)."""
    name: str
    config: str
    baseline: Optional[str] = None
    paper_miou: Optional[float] = None
    paper_speed: Optional[float] = None
    dilation_mode: Optional[str] = None
    #: the backbone's class (RepVGG, ResNetV1c, ...)
    backbone: Optional[str] = None
    decoder: Optional[str] = None
    params_m: Optional[float] = None
    gflops: Optional[float] = None
    nnpack_convs: int = 0
    convs: int = 0
    runs: Dict[str, Run] = dataclasses.field(default_factory=dict)
    #: what the repair of the ``_eq`` INT8 runs changed (the report of
    #: :func:`repseg.quant.equalize.equalize_`), else None
    equalization: Optional[dict] = None
    #: fused speed over the baseline model's (Table 8's comparison)
    speed_vs_baseline: Optional[float] = None

    @property
    def fused(self) -> Run:
        return self.runs[FUSED]

    def run(self, label: str) -> Optional[Run]:
        return self.runs.get(label)

    @property
    def is_resnet(self) -> bool:
        """A ResNet baseline (by its backbone, else by its name)."""
        return is_resnet(self.backbone or self.name)

    def runtime_runs(self) -> Dict[str, Run]:
        """The runs of the exported model in ONNX Runtime / OpenVINO."""
        return {k: r for k, r in self.runs.items() if r.runtime != PYTORCH}

    @property
    def fused_speedup(self) -> Optional[float]:
        """Fused over unfused speed (None without an unfused run)."""
        u = self.run(UNFUSED)
        return self.fused.img_per_s / u.img_per_s if u else None

    @property
    def conv_impl_speedup(self) -> Optional[float]:
        """NNPACK over native-conv speed (None without a native run)."""
        n = self.run(NATIVE)
        return self.fused.img_per_s / n.img_per_s if n else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(fused_speedup=self.fused_speedup,
                 conv_impl_speedup=self.conv_impl_speedup)
        return d


__all__ = ['Run', 'ModelResult', 'run_label', 'FUSED', 'NATIVE', 'BF16',
           'UNFUSED', 'PYTORCH']
