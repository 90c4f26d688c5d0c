# Copyright (c) repseg contributors. All rights reserved.
"""How the benchmark runs: :class:`BenchmarkSettings`, one field per
option of tools/benchmark.py, every combination checked once
(:meth:`BenchmarkSettings.resolved`)."""
import dataclasses
from contextlib import nullcontext
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..deploy.build import check_input_size
from ..deploy.runs import PYTORCH
from ..deploy.runtimes import runtime_names
from ..errors import UsageError, opt
from ..ops.nnpack_conv import is_nnpack, resolve_conv_impl
from ..settings import Settings

DTYPES = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)
#: the precisions timed side by side: fp32 with a bf16 copy of each model
SIDE_BY_SIDE = ('fp32', 'bf16')


@dataclasses.dataclass
class BenchmarkSettings(Settings):
    """How to run the benchmark (one field per option of
    tools/benchmark.py). ``None`` batch size / warm-up / iterations take the
    paper's GPU protocol on a GPU (16 / 50 / 50) and 1 / 1 / 2 on a CPU.

    ``dtype``: the precision of the fused models ('fp32', 'fp16' or
    'bf16'), or ``('fp32', 'bf16')``: fp32 models and a bf16 copy of each
    timed beside them (PyTorch, and the runtimes that run bf16 here)."""
    device: str = 'cpu'
    batch_size: Optional[int] = None
    input_size: Optional[Sequence[int]] = None
    warmup: Optional[int] = None
    iters: Optional[int] = None
    repeat: int = 3
    dtype: Union[str, Sequence[str]] = 'fp32'
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    compare_unfused: bool = False
    flops: bool = True
    fast: bool = False
    backend: Sequence[str] = ()
    conv_impl: str = 'auto'
    compare_conv_impl: bool = False
    profile: bool = False
    int8: bool = False
    equalize: str = 'off'
    throughput: int = 0

    @property
    def dev(self) -> torch.device:
        return torch.device(self.device)

    @property
    def dtypes(self) -> Tuple[str, ...]:
        """Every precision asked for, each once."""
        return (self.dtype, ) if isinstance(self.dtype, str) else tuple(
            dict.fromkeys(self.dtype))

    @property
    def model_dtype(self) -> str:
        """The precision of the fused models (fp32 with a bf16 copy)."""
        return self.dtypes[0] if len(self.dtypes) == 1 else SIDE_BY_SIDE[0]

    @property
    def bf16(self) -> bool:
        """A bf16 copy of each fp32 model is timed beside it."""
        return len(self.dtypes) > 1

    @property
    def tdtype(self) -> torch.dtype:
        return DTYPES[self.model_dtype]

    @property
    def runtimes(self) -> List[str]:
        """The runtimes timed next to PyTorch (PyTorch itself dropped)."""
        names = [self.backend] if isinstance(self.backend, str) else list(
            self.backend or ())
        return [n for n in dict.fromkeys(names) if n != PYTORCH]

    def resolved(self) -> 'BenchmarkSettings':
        """A checked copy with the defaults filled in and ``conv_impl``
        resolved (raises :class:`~repseg.errors.UsageError`)."""
        s = dataclasses.replace(self)
        on_gpu = s.dev.type == 'cuda'
        if on_gpu and not torch.cuda.is_available():
            raise UsageError(f'{opt("device", self.device)} was asked for but '
                             'CUDA is not available; use '
                             f'{opt("device", "cpu")}')
        s.batch_size = s.batch_size or (16 if on_gpu else 1)
        s.warmup = (50 if on_gpu else 1) if s.warmup is None else s.warmup
        s.iters = (50 if on_gpu else 2) if s.iters is None else s.iters
        if s.batch_size < 1 or s.iters < 1 or s.repeat < 1 or s.warmup < 0:
            raise UsageError('batch size, iterations and repeats must be >= '
                             '1 and warm-up >= 0')
        if s.input_size is not None:
            s.input_size = check_input_size(s.input_size)
        s._check_dtypes()
        s._check_combinations()
        try:
            s.conv_impl = resolve_conv_impl(
                'native' if s.channels_last and s.conv_impl == 'auto' else
                s.conv_impl, s.dev, s.tdtype)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if s.compare_conv_impl and s.conv_impl == 'native':
            raise UsageError(f'{opt("compare_conv_impl")} times NNPACK convs '
                             'against native ones; it needs '
                             f'{opt("conv_impl", "nnpack")} (or '
                             "'auto' on a CPU with fp32)")
        return s

    def _check_dtypes(self) -> None:
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise UsageError(f'{opt("dtype", bad[0] if bad else None)} is '
                             f'not a precision: give one of {sorted(DTYPES)}'
                             f' or {" ".join(SIDE_BY_SIDE)} (side by side)')
        if self.bf16 and set(self.dtypes) != set(SIDE_BY_SIDE):
            raise UsageError(
                f'{opt("dtype", list(self.dtypes))}: precisions side by side '
                f'are {" and ".join(SIDE_BY_SIDE)} (a bf16 copy of each fp32 '
                f'model); give {opt("dtype", list(SIDE_BY_SIDE))} or one '
                'precision')
        if self.bf16 and self.amp:
            raise UsageError(f'{opt("dtype", list(SIDE_BY_SIDE))} times a '
                             'bf16 copy of each fp32 model next to it; drop '
                             f'{opt("amp")}')

    def _check_combinations(self) -> None:
        bad = [n for n in self.runtimes if n not in runtime_names()]
        if bad:
            raise UsageError(f'{opt("backend", bad[0])} is not a runtime: '
                             f'choose from {PYTORCH!r}, '
                             f"{', '.join(map(repr, runtime_names()))}")
        if self.runtimes and (
                self.dev.type != 'cpu' or self.model_dtype != 'fp32'
                or self.compile or self.channels_last or self.amp):
            raise UsageError(
                f'{opt("backend", self.runtimes[0])} times the exported fp32 '
                f'model on the CPU: drop {opt("compile")} / '
                f'{opt("channels_last")} / {opt("amp")} and keep '
                f'{opt("dtype", "fp32")}')
        if self.channels_last and is_nnpack(self.conv_impl):
            raise UsageError(f'{opt("conv_impl", self.conv_impl)} runs NCHW '
                             'tensors; it cannot be combined with '
                             f'{opt("channels_last")}')
        if self.equalize != 'off' and not self.int8:
            raise UsageError(f'{opt("equalize", self.equalize)} adds INT8 '
                             'rows of the equalized model; it needs '
                             f'{opt("int8")} (and {opt("backend", None)})')
        if self.int8 and not self.runtimes:
            raise UsageError(f'{opt("int8")} times the INT8 model of a '
                             'runtime next to fp32; it needs '
                             + ' or '.join(opt('backend', n)
                                           for n in runtime_names()))
        if self.throughput and not self.runtimes:
            raise UsageError(f'{opt("throughput", self.throughput)} times '
                             'the runtimes in throughput mode; it needs '
                             f'{opt("backend", None)}')
        if self.throughput < 0:
            raise UsageError(f'{opt("throughput", self.throughput)}: give '
                             'the images per round (1 or more), or 0')
        if self.profile and (self.compile or self.runtimes):
            raise UsageError(f'{opt("profile")} times the layers of the eager '
                             f'PyTorch model; drop {opt("compile")} / '
                             f'{opt("backend", None)}')

    def autocast(self):
        """The autocast context of ``amp`` (bf16 on the CPU)."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.dev.type, dtype=torch.bfloat16
                              if self.dev.type == 'cpu' else torch.float16)


__all__ = ['BenchmarkSettings', 'DTYPES']
