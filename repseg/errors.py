# Copyright (c) repseg contributors. All rights reserved.
"""repseg's exceptions: one family, so that every tool turns any of them
into one ``error:`` line. Each message says what was wrong and what to do;
library messages do not name command-line flags unless a tool passes them
on."""


class RepsegError(RuntimeError):
    """Base of every error repseg raises on purpose."""


class UsageError(RepsegError):
    """A mistake in what the user asked for (a config, an option, a
    path)."""


class CheckpointError(RepsegError):
    """A checkpoint file is missing, unreadable, unsafe or of the wrong
    kind."""


class DatasetError(RepsegError):
    """A dataset folder is missing, incomplete or holds bad files."""


class NotFusedError(RepsegError):
    """A model that must be fully re-parameterized still holds
    multi-branch blocks or foldable conv-BN pairs."""


class BackendError(RepsegError):
    """A compute backend (NNPACK, onnxruntime) cannot run here."""


__all__ = [
    'RepsegError', 'UsageError', 'CheckpointError', 'DatasetError',
    'NotFusedError', 'BackendError'
]
