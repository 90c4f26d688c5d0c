"""repseg.errors: one family; library messages name settings, tools render
them as their flags (and no message in the package spells a flag)."""
import argparse
import ast
import glob
import os.path as osp
import re

import pytest

from repseg.errors import (CheckpointError, RepsegError, UsageError,
                           flags_of, opt, render)
from tests.utils import ROOT


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument('--force', action='store_true')
    p.add_argument('--unsafe-load', dest='allow_unsafe', action='store_true')
    p.add_argument('--conv-impl', '-c')
    p.add_argument('--cfg-options', nargs='+')
    return p


def test_python_spelling_by_default():
    e = UsageError(f'pass {opt("force")}, {opt("conv_impl", "nnpack")}, '
                   f'{opt("amp", False)}, {opt("work_dir", None)} or '
                   f'{opt("cfg_options", "model.pretrained=None")}')
    assert str(e) == ("pass force=True, conv_impl='nnpack', amp=False, "
                      "work_dir or cfg_options={'model.pretrained': None}")
    with pytest.raises(UsageError, match=r"conv_impl='nnpack'"):
        raise e
    assert repr(e) == f'UsageError({str(e)!r})'


def test_tool_spelling_from_its_parser():
    e = CheckpointError(
        f'pass {opt("allow_unsafe")} or {opt("conv_impl", "native")}; '
        f'{opt("amp", False)}; '
        f'{opt("cfg_options", "model.init_cfg=None")}')
    assert flags_of(_parser()) == {
        'force': '--force', 'allow_unsafe': '--unsafe-load',
        'conv_impl': '--conv-impl', 'cfg_options': '--cfg-options'}
    # amp is not a flag of this tool: it stays in its Python spelling
    assert e.render(_parser()) == (
        'pass --unsafe-load or --conv-impl native; amp=False; '
        '--cfg-options model.init_cfg=None')
    assert render(e.args[0], {'amp': '--amp'}).endswith(
        '; no --amp; cfg_options={\'model.init_cfg\': None}')


def test_message_without_settings_is_unchanged():
    e = RepsegError("path 'a --b' exists")
    assert str(e) == e.render(_parser()) == "path 'a --b' exists"


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
_MESSAGE_CALLS = {'print_log', 'warn', 'info', 'warning', 'error'}


def _messages(tree, source):
    """Source of every raise and log/warn call (where messages are)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            yield node.lineno, ast.get_source_segment(source, node.exc)
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(
                f, 'id', '')
            if name in _MESSAGE_CALLS:
                yield node.lineno, ast.get_source_segment(source, node)


def test_library_messages_do_not_spell_flags():
    """A message may name another command to run (``python
    tools/convert_cityscapes.py ROOT --overwrite``), never a flag of the
    caller: settings go through opt()."""
    found = []
    for path in glob.glob(osp.join(ROOT, 'repseg', '**', '*.py'),
                          recursive=True):
        source = open(path).read()
        for line, segment in _messages(ast.parse(source), source):
            if _FLAG.search(segment) and 'tools/' not in segment:
                found.append(f'{osp.relpath(path, ROOT)}:{line}')
    assert not found, found
