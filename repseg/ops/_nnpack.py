# Copyright (c) repseg contributors. All rights reserved.
"""ctypes binding of ``nnp_convolution_inference`` from the NNPACK that
PyTorch's CPU wheels link into ``libtorch_cpu``.

``torch._nnpack_spatial_convolution`` transforms the kernel on every call and
lets NNPACK allocate its workspace on every call. Calling NNPACK directly
allows what its API offers for inference:

- the Winograd transform of each kernel is computed ONCE
  (``transform_strategy_precompute``) and reused on every call (``reuse``);
- one workspace buffer is kept and grown, instead of a fresh allocation
  (and its page faults) per layer;
- a thread pool sized by ``torch.get_num_threads()`` (recreated when that
  changes).

Measured on 2 cores for a 512->512 3x3 conv on 90x90: 125 ms through
``torch._nnpack_spatial_convolution``, 88 ms here with a precomputed kernel.

Everything is optional: :func:`binding` returns None when the symbols are not
exported (other builds / platforms), and :mod:`repseg.ops.nnpack_conv` then
falls back to ``torch._nnpack_spatial_convolution``.
"""
import ctypes
import glob
import os.path as osp
import threading
from typing import Optional

import torch

from ..errors import BackendError

#: enum values of nnpack.h
_WT8X8 = 3                      # nnp_convolution_algorithm_wt8x8
_COMPUTE, _PRECOMPUTE, _REUSE = 1, 2, 3   # nnp_convolution_transform_strategy

_STATUS = {
    2: 'invalid batch size', 3: 'invalid channels',
    4: 'invalid input channels', 5: 'invalid output channels',
    10: 'invalid input size', 11: 'invalid input stride',
    12: 'invalid input padding', 13: 'invalid kernel size',
    16: 'invalid algorithm', 17: 'invalid transform strategy',
    20: 'unsupported input size', 22: 'unsupported input padding',
    23: 'unsupported kernel size', 26: 'unsupported algorithm',
    27: 'unsupported transform strategy', 28: 'unsupported activation',
    50: 'uninitialized', 51: 'unsupported hardware', 52: 'out of memory',
    53: 'insufficient buffer'
}


class _Size(ctypes.Structure):
    _fields_ = [('width', ctypes.c_size_t), ('height', ctypes.c_size_t)]


class _Padding(ctypes.Structure):
    _fields_ = [('top', ctypes.c_size_t), ('right', ctypes.c_size_t),
                ('bottom', ctypes.c_size_t), ('left', ctypes.c_size_t)]


_KERNEL = _Size(3, 3)
_NO_SUBSAMPLING = _Size(1, 1)
_PAD1 = _Padding(1, 1, 1, 1)


class NNPACKError(BackendError):
    """An NNPACK call returned an error status."""


class _Binding:
    """The NNPACK inference entry point with its thread pool and workspace.

    Calls are serialized by a lock (one workspace, one thread pool)."""

    def __init__(self, lib: ctypes.CDLL):
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        self._conv = lib.nnp_convolution_inference
        self._conv.restype = ctypes.c_int
        self._conv.argtypes = [
            ctypes.c_int, ctypes.c_int, sz, sz, _Size, _Padding, _Size,
            _Size, vp, vp, vp, vp, vp, ctypes.POINTER(sz), ctypes.c_int, vp,
            vp, vp
        ]
        self._pool_create = lib.pthreadpool_create
        self._pool_create.restype = vp
        self._pool_create.argtypes = [sz]
        self._pool_destroy = lib.pthreadpool_destroy
        self._pool_destroy.restype = None
        self._pool_destroy.argtypes = [vp]
        status = lib.nnp_initialize()
        if status != 0:
            raise NNPACKError(f'nnp_initialize: {_STATUS.get(status, status)}')
        self._pool = None
        self._pool_threads = 0
        self._workspace = torch.empty(0, dtype=torch.uint8)
        self.lock = threading.Lock()

    def _threadpool(self) -> Optional[int]:
        threads = torch.get_num_threads()
        if threads != self._pool_threads:
            if self._pool:
                self._pool_destroy(self._pool)
            self._pool = self._pool_create(threads) if threads > 1 else None
            self._pool_threads = threads
        return self._pool

    def _check(self, status: int, what: str):
        if status != 0:
            raise NNPACKError(f'nnp_convolution_inference ({what}): '
                              f'{_STATUS.get(status, status)}')

    def transform_kernel(self, weight: torch.Tensor) -> torch.Tensor:
        """The Winograd F(6x6, 3x3) transform of a (C_out, C_in, 3, 3)
        fp32 kernel, as a byte tensor for :meth:`conv` (64/9 times the size
        of ``weight``; independent of the image size)."""
        weight = weight.detach().contiguous()
        co, ci = weight.shape[:2]
        size = ctypes.c_size_t(0)
        with self.lock:
            pool = self._threadpool()
            self._check(
                self._conv(_WT8X8, _PRECOMPUTE, ci, co, _Size(8, 8), _PAD1,
                           _KERNEL, _NO_SUBSAMPLING, None, None, None, None,
                           None, ctypes.byref(size), 0, None, pool, None),
                'kernel transform size')
            out = torch.empty(size.value, dtype=torch.uint8)
            self._check(
                self._conv(_WT8X8, _PRECOMPUTE, ci, co, _Size(8, 8), _PAD1,
                           _KERNEL, _NO_SUBSAMPLING, None, weight.data_ptr(),
                           None, None, out.data_ptr(), ctypes.byref(size), 0,
                           None, pool, None), 'kernel transform')
        return out

    def conv(self, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor,
             out: torch.Tensor, transformed: bool):
        """``out = conv3x3(x, kernel, padding=1) + bias`` for ONE image.

        Args:
            x (Tensor): (C_in, H, W) fp32, contiguous.
            kernel (Tensor): (C_out, C_in, 3, 3) fp32 contiguous, or its
                :meth:`transform_kernel` when ``transformed``.
            bias (Tensor): (C_out,) fp32 contiguous.
            out (Tensor): (C_out, H, W) fp32 contiguous, written.
            transformed (bool): whether ``kernel`` is pre-transformed.
        """
        ci, h, w = x.shape
        co = out.shape[0]
        strategy = _REUSE if transformed else _COMPUTE
        args = (_WT8X8, strategy, ci, co, _Size(w, h), _PAD1, _KERNEL,
                _NO_SUBSAMPLING)
        size = ctypes.c_size_t(0)
        with self.lock:
            pool = self._threadpool()
            self._check(
                self._conv(*args, x.data_ptr(), kernel.data_ptr(),
                           bias.data_ptr(), None, None, ctypes.byref(size),
                           0, None, pool, None), 'workspace size')
            if size.value > self._workspace.numel():
                self._workspace = torch.empty(size.value + 64,
                                              dtype=torch.uint8)
            size = ctypes.c_size_t(self._workspace.numel())
            self._check(
                self._conv(*args, x.data_ptr(), kernel.data_ptr(),
                           bias.data_ptr(), out.data_ptr(),
                           self._workspace.data_ptr(), ctypes.byref(size), 0,
                           None, pool, None), 'convolution')


_binding: Optional[_Binding] = None
_binding_error: Optional[str] = None
_binding_lock = threading.Lock()


def binding() -> Optional[_Binding]:
    """The NNPACK binding, or None when this PyTorch build does not export
    NNPACK's symbols (see :func:`binding_error`)."""
    global _binding, _binding_error
    if _binding is not None or _binding_error is not None:
        return _binding
    with _binding_lock:
        if _binding is None and _binding_error is None:
            try:
                libs = sorted(
                    glob.glob(
                        osp.join(osp.dirname(torch.__file__), 'lib',
                                 '*torch_cpu.*')))
                if not libs:
                    raise OSError('libtorch_cpu not found next to torch')
                _binding = _Binding(ctypes.CDLL(libs[0]))
            except (OSError, AttributeError, NNPACKError) as e:
                _binding_error = f'{type(e).__name__}: {e}'
    return _binding


def binding_error() -> Optional[str]:
    """Why :func:`binding` is None (None when it is not)."""
    binding()
    return _binding_error
