"""The docs cannot rot: every command block of docs/ and README.md marked
``# runs on the synthetic data`` is executed (bash blocks with bash -e,
python blocks with python, in a scratch project root whose configs/ and
tools/ are this checkout's and whose data/synthetic_cityscapes is what
``make demo`` generates); every other command line is checked for tools,
configs and flags that exist."""
import argparse
import glob
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest

from repseg.datasets import generate_synthetic_cityscapes
from tests.utils import ROOT, tool_module

MARK = '# runs on the synthetic data'
DOCS = sorted(glob.glob(osp.join(ROOT, 'docs', '*.md'))) + [
    osp.join(ROOT, 'README.md')]
BLOCK = re.compile(r'^```(bash|python)\n(.*?)^```', re.S | re.M)


def blocks(path):
    """(language, code) of every fenced bash/python block of ``path``."""
    with open(path) as f:
        return BLOCK.findall(f.read())


def runnable(path):
    return [(lang, code) for lang, code in blocks(path)
            if code.lstrip().startswith(MARK)]


def commands(code):
    """The command lines of a bash block (continuations joined, comments
    and blank lines dropped)."""
    joined = re.sub(r'\s*\\\n\s*', ' ', code)
    out = []
    for line in joined.splitlines():
        line = line.split(' #')[0].strip()
        if line and not line.startswith('#'):
            out.append(line)
    return out


def _parser(tool):
    """The argparse parser of a tools/ script."""
    return tool_module(tool).build_parser()


def _flags(parser):
    return {s for a in parser._actions for s in a.option_strings}


STATIC = [(osp.relpath(p, ROOT), i, line)
          for p in DOCS for i, (lang, code) in enumerate(blocks(p))
          if lang == 'bash' for line in commands(code)]


@pytest.mark.parametrize('doc, block, line', STATIC)
def test_every_command_names_tools_configs_and_flags_that_exist(doc, block,
                                                                line):
    words = shlex.split(line)
    words = [w for w in words if not re.match(r'^[A-Z_]+=', w)]  # env
    if not words or words[0] == 'make':
        assert words[1:] in ([], ['demo'], ['test'], ['test',
                                                      'PYTHON=python3.11'])
        return
    tool = next((w for w in words if w.startswith('tools/')), None)
    if tool is None:
        assert words[0] in ('python', 'bash', 'pip', 'ray'), line  # ray start
        return
    path = osp.join(ROOT, tool)
    assert osp.isfile(path), f'{doc}: {tool} does not exist'
    for w in words:
        if w.startswith('configs/'):
            assert osp.isfile(osp.join(ROOT, w)), f'{doc}: {w} is missing'
    # the launch scripts pass their options on to train.py / test.py
    target = osp.join(ROOT, 'tools', 'train.py' if 'train' in tool else
                      'test.py') if tool.endswith('.sh') else path
    parser = _parser(target)
    if parser is not None:
        known = _flags(parser)
        for w in words[words.index(tool) + 1:]:
            w = w.strip('[]')
            if w.startswith('--'):
                flag = w.split('=')[0]
                assert flag in known, f'{doc}: {tool} has no {flag}'
            if w == '--':
                break


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """A scratch project root: this checkout's configs/ and tools/, and the
    synthetic dataset of ``make demo``."""
    root = tmp_path_factory.mktemp('docs_project')
    os.symlink(osp.join(ROOT, 'configs'), root / 'configs')
    os.symlink(osp.join(ROOT, 'tools'), root / 'tools')
    generate_synthetic_cityscapes(str(root / 'data' / 'synthetic_cityscapes'),
                                  num_train=24, num_val=8, seed=0)
    return root


RUNNABLE = [osp.relpath(p, ROOT) for p in DOCS if runnable(p)]


def test_the_guides_that_can_run_here_do():
    assert {'docs/inference.md', 'docs/deployment.md',
            'docs/training_and_testing.md', 'docs/benchmark.md',
            'docs/datasets.md', 'docs/configs_and_backbones.md'} <= set(
                RUNNABLE)


@pytest.mark.slow
@pytest.mark.parametrize('doc', RUNNABLE)
def test_runnable_blocks_run(doc, project):
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED='1')
    for k, (lang, code) in enumerate(runnable(osp.join(ROOT, doc))):
        command = (['bash', '-euo', 'pipefail', '-c', code] if lang == 'bash'
                   else [sys.executable, '-c', code])
        proc = subprocess.run(command, cwd=project, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f'{doc}, runnable block {k + 1} failed:\n{code}\n'
            + proc.stdout[-2000:] + proc.stderr[-3000:])


def test_the_readme_is_short_and_links_every_guide():
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    assert len(text.splitlines()) <= 150
    for doc in glob.glob(osp.join(ROOT, 'docs', '*.md')):
        assert f'docs/{osp.basename(doc)}' in text, doc


def test_commands_parser_reads_continuations():
    assert commands('# c\npython a.py \\\n    --x 1  # note\n\nb') == [
        'python a.py --x 1', 'b']
    assert argparse   # the tools' parsers are argparse parsers
