"""One definition of each default: a flag that fills a settings field and
shows its default (``%(default)s`` in its help) takes it from the settings
class, and no flag writes its own default next to one."""
import ast
import dataclasses
import os.path as osp

import pytest

from tests.utils import ROOT, tool_module

#: each tool and the settings class its flags fill
TOOLS = {'test.py': 'TestSettings', 'export.py': 'ExportSettings',
         'benchmark.py': 'BenchmarkSettings',
         'quantize.py': 'QuantizeSettings', 'infer.py': 'InferSettings',
         'serve.py': 'ServeSettings'}


def _settings(name):
    if name == 'ServeSettings':
        from repseg.serve.settings import ServeSettings
        return ServeSettings
    import repseg.apis
    return getattr(repseg.apis, name)


def hand_written_defaults(source: str, fields) -> list:
    """``add_argument`` calls of ``source`` that write a ``default=`` of
    their own for a settings field (the flag's destination, from
    ``dest=`` or its long option)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and getattr(
                node.func, 'attr', '') == 'add_argument'):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        flags = [a.value for a in node.args
                 if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        dest = kw['dest'].value if isinstance(kw.get('dest'), ast.Constant) \
            else next((f.lstrip('-').replace('-', '_') for f in flags
                       if f.startswith('--')), None)
        action = kw.get('action')
        if 'default' in kw and dest in fields and not (
                isinstance(action, ast.Constant)
                and action.value in ('store_true', 'store_false')):
            found.append(f'{dest} (line {node.lineno})')
    return found


@pytest.mark.parametrize('tool', list(TOOLS))
def test_shown_defaults_are_the_settings_defaults(tool):
    settings = _settings(TOOLS[tool])
    fields = {f.name: f for f in dataclasses.fields(settings)}
    mod = tool_module(osp.join(ROOT, 'tools', tool))
    parser = mod.build_parser()
    for action in parser._actions:
        if '%(default)' not in (action.help or ''):
            continue
        f = fields[action.dest]
        assert action.default == f.default, (tool, action.dest)
    # no default written twice: not in the tool, nor in the package's
    # command line the tool wraps
    sources = {mod.__file__} | {
        osp.join(ROOT, 'repseg', pkg, 'cli.py') for pkg in ('infer', 'serve')
        if tool == f'{pkg}.py'}
    twice = [f'{osp.relpath(p, ROOT)}: {d}' for p in sorted(sources)
             for d in hand_written_defaults(open(p).read(), fields)]
    assert not twice, f'defaults written besides {settings.__name__}: {twice}'


def test_the_check_finds_a_default_written_twice():
    source = ("p.add_argument('--calib-images', type=int, default=64)\n"
              "p.add_argument('--n', dest='repeat', default=3)\n"
              "p.add_argument('--other', default=1)\n"
              "p.add_argument('--force', action='store_true', default=0)\n")
    assert hand_written_defaults(source, {'calib_images', 'repeat',
                                          'force'}) == [
        'calib_images (line 1)', 'repeat (line 2)']
