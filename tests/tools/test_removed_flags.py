"""Flags this release removed answer with one ``error:`` line naming what
replaces them, before anything runs (the old spellings were deprecated for
one release)."""
import os.path as osp

import pytest

from tests.utils import ROOT, tool_module


@pytest.mark.parametrize('tool, argv, flag, replacement', [
    ('quantize.py', ['c.py', 'k.pth', '--out', 'q'], '--out',
     'give the folder OUT after CHECKPOINT (tools/quantize.py CONFIG '
     'CHECKPOINT OUT)'),
    ('quantize.py', ['c.py', 'k.pth', '--out=q'], '--out',
     'give the folder OUT after CHECKPOINT'),
    ('benchmark.py', ['c.py', '--bf16'], '--bf16',
     'use --dtype fp32 bf16 (a bf16 copy of each model timed next to '
     'fp32)'),
])
def test_a_removed_flag_is_one_error_line(tool, argv, flag, replacement):
    mod = tool_module(osp.join(ROOT, 'tools', tool))
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert str(e.value.code).startswith(
        f'error: {flag} was removed: {replacement}'), e.value.code
    assert '\n' not in str(e.value.code)


def test_one_dtype_in_the_benchmark():
    """--dtype takes the precisions timed side by side (fp32 bf16: a bf16
    copy next to fp32, what --bf16 did) or one."""
    from repseg.apis import BenchmarkSettings
    parser = tool_module(osp.join(ROOT, 'tools', 'benchmark.py')
                         ).build_parser()
    for argv, (model, copy) in (([], ('fp32', False)),
                                (['--dtype', 'bf16'], ('bf16', False)),
                                (['--dtype', 'fp32', 'bf16'], ('fp32', True))):
        s = BenchmarkSettings.of(vars(parser.parse_args(['c.py'] + argv)))
        assert (s.model_dtype, s.bf16) == (model, copy), argv
