# Copyright (c) repseg contributors. All rights reserved.
"""Pre-flight checks of a training or test run: the dataset folders, local
pretrained files, the work dir (never overwrite, never resume nothing) and
the checkpoint a resume would read."""
import glob
import os
import os.path as osp
from typing import Sequence

from mmengine.config import Config
from mmengine.logging import print_log

from ..datasets.cityscapes import check_cityscapes
from ..engine.checkpoint import load_state_dict_file
from ..errors import CheckpointError, UsageError, opt


def dataset_roots(cfg: Config, loaders: Sequence[str]) -> Sequence[tuple]:
    roots = []
    for key in loaders:
        loader = cfg.get(key)
        if not loader:
            continue
        ds = loader.get('dataset', {})
        if ds.get('type') == 'CityscapesDataset':
            split = osp.basename(
                ds.get('data_prefix', {}).get('img_path', '').rstrip('/'))
            roots.append((ds.get('data_root', ''), split))
    return roots


def check_data(cfg: Config,
               loaders: Sequence[str] = ('train_dataloader',
                                         'val_dataloader')) -> None:
    """Check the Cityscapes folders that the given dataloaders of a config
    read, before the Runner starts (raises :class:`DatasetError` with a
    pointer to data/README.md)."""
    done = set()
    for root, split in dataset_roots(cfg, loaders):
        if (root, split) not in done:
            counts = check_cityscapes(root, splits=(split, ))
            print_log(f'Dataset check: {root} {split}: {counts[split]} '
                      'images, labels OK', logger='current')
            done.add((root, split))


def check_pretrained(cfg: Config) -> None:
    """Refuse to start when a local pretrained checkpoint named by
    ``init_cfg`` does not exist (instead of failing deep in init)."""
    def walk(node, path):
        if isinstance(node, dict):
            if node.get('type') == 'Pretrained':
                ckpt = node.get('checkpoint')
                if isinstance(ckpt, str) and '://' not in ckpt and \
                        not osp.isfile(ckpt):
                    raise UsageError(
                        f'{path}.init_cfg asks for the pretrained checkpoint '
                        f'{ckpt!r}, which does not exist. Download it (see '
                        'docs/configs_and_backbones.md, "Pretrained '
                        'backbones") or train from scratch with '
                        f'{opt("cfg_options", path + ".init_cfg=None")}')
            for k, v in node.items():
                walk(v, f'{path}.{k}' if k != 'init_cfg' else path)
    walk(cfg.model, 'model')


def check_work_dir(cfg: Config) -> None:
    """Never overwrite the checkpoints of an earlier run silently; never
    'resume' a run that is not there (mmengine would start from scratch)."""
    if cfg.get('resume') and cfg.get('load_from') is None:
        found = glob.glob(osp.join(cfg.work_dir, '*.pth'))
        if not found:
            raise UsageError(
                f'nothing to resume: the work dir {cfg.work_dir!r} '
                + ('holds no checkpoint' if osp.isdir(cfg.work_dir) else
                   'does not exist')
                + f'. Check the work dir ({opt("work_dir", None)}; by default '
                'work_dirs/<config name>), or start a new run with '
                f'{opt("resume", False)}.')
        return
    if cfg.get('resume') or not osp.isdir(cfg.work_dir):
        return
    old = glob.glob(osp.join(cfg.work_dir, '*.pth'))
    if old:
        raise UsageError(
            f'work dir {cfg.work_dir!r} already holds {len(old)} checkpoint(s)'
            f' of an earlier run. Pass {opt("resume")} to continue that run, '
            f'or another {opt("work_dir", None)} to start a new one '
            'elsewhere.')


def check_resume_checkpoint(cfg: Config, allow_unsafe: bool = False) -> None:
    """Read the checkpoint ``--resume`` will continue from with the safe
    loader first: one whose unpickling would run code is refused with the
    clear error (mmengine's resume would stop in a traceback), unless
    ``allow_unsafe``, which then lets torch unpickle it fully."""
    from mmengine.runner.checkpoint import find_latest_checkpoint
    path = cfg.get('load_from') or find_latest_checkpoint(cfg.work_dir)
    if not path or not osp.isfile(path):
        return
    try:
        load_state_dict_file(path)
    except CheckpointError as e:
        if not (allow_unsafe and 'full unpickling' in str(e)):
            raise
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'


__all__ = [
    'check_data', 'check_pretrained', 'check_work_dir',
    'check_resume_checkpoint', 'dataset_roots'
]
