"""Every tool explains itself: its whole docstring as the description,
a whole sentence for every argument, and mmseg's flags where mmseg's tools
have them."""
import argparse
import glob
import os.path as osp
import re
import sys

import pytest

from tests.utils import ROOT, tool_module

TOOLS = sorted(p for p in glob.glob(osp.join(ROOT, 'tools', '*.py')) +
               glob.glob(osp.join(ROOT, 'tools', 'dev', '*.py'))
               if not osp.basename(p).startswith('_')
               and osp.basename(p) != 'isa_mask.py')


def _parser(path):
    return tool_module(path).build_parser()


@pytest.mark.parametrize('path', TOOLS,
                         ids=[osp.relpath(p, ROOT) for p in TOOLS])
def test_every_tool_and_argument_has_whole_sentences(path):
    mod = tool_module(path)
    parser = mod.build_parser()
    # the description is the whole docstring (of the module that builds
    # the parser), its first paragraph whole
    owner = sys.modules.get(mod.build_parser.__module__, mod)
    assert parser.description.strip() == owner.__doc__.strip()
    first = parser.description.strip().split('\n\n')[0]
    assert first.rstrip().endswith(('.', ':')), first
    for action in parser._actions:
        if action.dest == 'help' or action.help == argparse.SUPPRESS:
            continue   # hidden flags (a worker's own) need no help
        name = '/'.join(action.option_strings) or action.dest
        text = (action.help or '').strip()
        assert text, f'{osp.basename(path)}: {name} has no help'
        assert text[0].isupper() and text.endswith('.'), (
            f'{osp.basename(path)}: {name}: {text!r} is not a sentence')


def _flags(name):
    parser = _parser(osp.join(ROOT, 'tools', name))
    return {s for a in parser._actions for s in a.option_strings}


def test_mmseg_flags_where_mmseg_has_them():
    assert {'--work-dir', '--out', '--show', '--show-dir', '--wait-time',
            '--cfg-options', '--launcher', '--tta',
            '--local_rank'} <= _flags('test.py')
    assert {'--work-dir', '--resume', '--amp', '--auto-scale-lr',
            '--cfg-options', '--launcher', '--local_rank'} <= \
        _flags('train.py')


@pytest.mark.parametrize('name', ['export.py', 'convert.py', 'benchmark.py'])
def test_shape_is_spelled_the_same_everywhere(name):
    parser = _parser(osp.join(ROOT, 'tools', name))
    shape = next(a for a in parser._actions if '--shape' in a.option_strings)
    assert shape.nargs == '+' and shape.metavar == 'S'
    assert shape.default is None          # the config's test size
    assert re.search(r"the size the config's test loop runs", shape.help)
