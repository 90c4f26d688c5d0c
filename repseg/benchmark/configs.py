# Copyright (c) repseg contributors. All rights reserved.
"""What the benchmark times: the paper's Table 8 line-up (its configs
found on a search path, :func:`find_config`), or the configs given as the
tool takes them (``[CONFIG [CHECKPOINT]] ...``), each config loaded once
(:func:`load_entries`)."""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

from mmengine.config import Config

from ..deploy.build import check_input_size
from ..deploy.record import config_input_size
from ..engine.config import load_cfg
from ..errors import UsageError, opt
from .records import is_resnet

#: the environment variable naming the folders (``os.pathsep``-separated)
#: searched first for the line-up's configs
CONFIGS_ENV = 'REPSEG_CONFIGS'

# name, config, ResNet baseline, paper Table 8 (mIoU, examples/s on 1080Ti)
LINEUP = [
    ('RepVGG-B1g2-fast', 'pspnet_repvgg_b1g2_fast.py', 'ResNet-50-D8',
     78.88, 10.9),
    ('ResNet-50-D8', 'pspnet_r50-d8.py', None, 77.17, 10.4),
    ('RepVGG-B1g2', 'pspnet_repvgg_b1g2.py', 'ResNet-50-D8', 78.70, 8.0),
    ('RepVGG-B2-fast', 'pspnet_repvgg_b2_fast.py', 'ResNet-101-D8', 79.52,
     6.9),
    ('ResNet-101-D8', 'pspnet_r101-d8.py', None, 78.51, 6.7),
    ('RepVGG-B2', 'pspnet_repvgg_b2.py', 'ResNet-101-D8', 80.57, 4.5),
]


def config_dirs() -> List[str]:
    """The folders searched for the line-up's configs, in order: those of
    ``$REPSEG_CONFIGS``, then ``configs/`` of the current folder (a
    repseg checkout; the configs are not part of the installed
    package)."""
    named = [d for d in os.environ.get(CONFIGS_ENV, '').split(os.pathsep)
             if d]
    return named + [osp.join(os.getcwd(), 'configs')]


def find_config(name: str) -> str:
    """The path of the config file ``name`` in the first folder of
    :func:`config_dirs` that has it, or a UsageError naming the folders
    searched and what to do."""
    dirs = config_dirs()
    for d in dirs:
        path = osp.join(d, name)
        if osp.isfile(path):
            return osp.abspath(path)
    raise UsageError(
        f'the line-up config {name!r} is in none of the folders searched '
        f'({", ".join(dirs)}): run from a repseg checkout (its configs/), '
        f'set {CONFIGS_ENV} to the folder of the configs, or name the '
        'configs to time')


def pair_models(paths: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    """``[CONFIG [CHECKPOINT]] ...`` as the benchmark tool takes them: a
    ``.py`` file starts a model, anything after it until the next ``.py``
    is its checkpoint (at most one)."""
    pairs: List[list] = []
    for path in paths:
        if path.endswith('.py'):
            pairs.append([path, None])
        elif not pairs:
            raise UsageError(f'{path!r} comes before any config: give '
                             'CONFIG [CHECKPOINT] ... (a config is a .py '
                             'file, its checkpoint follows it)')
        elif pairs[-1][1] is not None:
            raise UsageError(
                f'{pairs[-1][0]!r} has two checkpoints ({pairs[-1][1]!r} '
                f'and {path!r}): give at most one after each config')
        else:
            pairs[-1][1] = path
    return [tuple(p) for p in pairs]


def lineup(fast: bool = False,
           config: Union[str, Sequence[str], None] = None,
           checkpoint: Optional[str] = None,
           cfg_options: Optional[dict] = None) -> List[dict]:
    """The paper's Table 8 rows (only the '-fast' ones and their ResNet
    baselines with ``fast``; configs found by :func:`find_config`), or
    the rows of ``config``: one config (with ``checkpoint``), or several
    as the tool takes them (``[CONFIG [CHECKPOINT]] ...``, see
    :func:`pair_models`), each named after its file (``-fast`` appended
    with ``fast``). When exactly one of several configs has a ResNet
    backbone, the others' speed is compared with it (the 'vs ResNet'
    column); their loaded configs are kept in the rows (``cfg``)."""
    if not config:
        rows = [dict(name=n, config=c, baseline=b, paper_miou=m,
                     paper_speed=s) for n, c, b, m, s in LINEUP
                if not fast or n.endswith('-fast') or b is None]
        for r in rows:
            r['config'] = find_config(r['config'])
        return rows
    if isinstance(config, str):
        models = [(config, checkpoint)]
    elif checkpoint is not None:
        raise UsageError('with several configs, give each checkpoint '
                         'after its config, not as checkpoint=')
    else:
        models = pair_models(config)
    rows = [dict(name=osp.splitext(osp.basename(c))[0] +
                 ('-fast' if fast else ''), config=c, checkpoint=k,
                 cfg_options=cfg_options) for c, k in models]
    names = [r['name'] for r in rows]
    if len(set(names)) < len(names):
        raise UsageError(f'a config is given twice ({", ".join(names)})'
                         ': give each model once')
    if len(rows) > 1:
        load_entries(rows)
        resnets = [r['name'] for r in rows if is_resnet(str(
            r['cfg'].model.get('backbone', {}).get('type', '')))]
        if len(resnets) == 1:
            for r in rows:
                if r['name'] != resnets[0]:
                    r['baseline'] = resnets[0]
    return rows


def load_entries(entries: List[dict]) -> List[Config]:
    """Every entry's config, loaded once (kept as its ``cfg``)."""
    for e in entries:
        if e.get('cfg') is None:
            e['cfg'] = load_cfg(e['config'], cfg_options=e.get('cfg_options'))
    return [e['cfg'] for e in entries]


def default_input_size(entries: List[dict]) -> tuple:
    """The input size the entries' configs test at (one for all: the
    models are timed on the same input)."""
    sizes = {}
    for e, cfg in zip(entries, load_entries(entries)):
        sizes.setdefault(check_input_size(config_input_size(cfg)), e['name'])
    if len(sizes) > 1:
        listed = ', '.join(f'{n} {h}x{w}' for (h, w), n in sizes.items())
        raise UsageError(f'the configs test at different input sizes '
                         f'({listed}); time them at one size with '
                         f'{opt("input_size", None)} H W')
    return next(iter(sizes))


__all__ = ['LINEUP', 'CONFIGS_ENV', 'config_dirs', 'find_config',
           'pair_models', 'lineup', 'load_entries', 'default_input_size']
