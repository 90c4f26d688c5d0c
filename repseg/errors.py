# Copyright (c) repseg contributors. All rights reserved.
"""repseg's exceptions: one family, so that every tool turns any of them
into one ``error:`` line. Each message says what was wrong and what to do.

Library messages never spell a command-line flag. A message names a setting
with :func:`opt` (``opt('force')``, ``opt('conv_impl', 'nnpack')``):
``str(error)`` shows it as the Python argument (``force=True``,
``conv_impl='nnpack'``), and a tool shows it as its own flag
(``--force``, ``--conv-impl nnpack``) with :meth:`RepsegError.render`::

    except RepsegError as e:
        sys.exit(f'error: {e.render(parser)}')
"""
import ast
import re
from typing import Any, Mapping, Union

_MARK = '\x1f'  # ASCII unit separator: never part of a real message
_OPT = re.compile(f'{_MARK}(\\w+){_MARK}(.*?){_MARK}', re.S)


def opt(name: str, value: Any = True) -> str:
    """Name the setting ``name`` (a Python argument of repseg's API) in an
    error message.

    Args:
        name (str): the Python argument, e.g. ``'force'``, ``'allow_unsafe'``,
            ``'cfg_options'`` (value ``'key=value'``).
        value: ``True`` (switch it on), ``False`` (leave it off), ``None``
            (the setting itself, no value) or the value to give it.

    Returns:
        str: a marker that :class:`RepsegError` renders.
    """
    return f'{_MARK}{name}{_MARK}{value!r}{_MARK}'


def _as_python(name: str, value: Any) -> str:
    if value is None:
        return name
    if name == 'cfg_options':
        key, _, val = str(value).partition('=')
        return f'cfg_options={{{key!r}: {val}}}'
    return f'{name}={value!r}'


def _as_flag(flag: str, value: Any) -> str:
    if value is True or value is None:
        return flag
    if value is False:
        return f'no {flag}'
    if isinstance(value, (tuple, list)):
        return ' '.join([flag] + [str(v) for v in value])
    return f'{flag} {value}'


def flags_of(parser) -> dict:
    """``{dest: '--long-flag'}`` of an argparse parser's optional
    arguments (the spelling a tool's user types)."""
    flags = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith('--')]
        if longs and action.dest != 'help':
            flags.setdefault(action.dest, longs[0])
    return flags


def render(message: str, flags: Union[Mapping[str, str], Any, None] = None
           ) -> str:
    """Turn the :func:`opt` markers of ``message`` into flags (names found
    in ``flags``, a ``{setting: flag}`` mapping or an argparse parser) or
    Python arguments (all others)."""
    if flags is not None and not isinstance(flags, Mapping):
        flags = flags_of(flags)
    flags = flags or {}

    def one(match):
        name, value = match.group(1), ast.literal_eval(match.group(2))
        if name in flags:
            return _as_flag(flags[name], value)
        return _as_python(name, value)

    return _OPT.sub(one, message)


class RepsegError(RuntimeError):
    """Base of every error repseg raises on purpose."""

    def __str__(self) -> str:
        return render(super().__str__())

    def __repr__(self) -> str:
        return f'{type(self).__name__}({str(self)!r})'

    def render(self, flags=None) -> str:
        """The message with its settings spelled as ``flags`` (a
        ``{setting: '--flag'}`` mapping or the tool's argparse parser)."""
        return render(super().__str__(), flags)


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


class StalledError(RepsegError):
    """Work that made no progress within its time limit and was given up
    (e.g. an image the runtime never finished). Threads may still be stuck
    in it: a tool exits at once after the error line (``abandons_threads``)
    instead of waiting for them."""
    abandons_threads = True


def run_command(parser, main, args):
    """A command's ``main(args)`` (``args``: what ``parser`` parsed), any
    :class:`RepsegError` it raises made one ``error:`` line on stderr
    (exit status 1) with its settings spelled as ``parser``'s flags;
    returns what ``main`` returns. The tools (``tools/_cli.run``) and the
    console scripts (``repseg-infer``) end this way.

    Args:
        parser (argparse.ArgumentParser): the command's parser.
        main (callable): takes the parsed ``args``.
        args (argparse.Namespace): the parsed command line.
    """
    import os
    import sys
    try:
        return main(args)
    except RepsegError as e:
        if getattr(e, 'abandons_threads', False):
            # threads stuck in native code would be joined at exit forever
            sys.stderr.write(f'error: {e.render(parser)}\n')
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)
        sys.exit(f'error: {e.render(parser)}')


__all__ = [
    'RepsegError', 'UsageError', 'CheckpointError', 'DatasetError',
    'NotFusedError', 'BackendError', 'StalledError', 'opt', 'render',
    'flags_of', 'run_command'
]
