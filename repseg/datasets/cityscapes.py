# Copyright (c) repseg contributors. All rights reserved.
"""Cityscapes preparation: label-id conversion and a layout checker that
runs before training (a missing or unconverted dataset gets a clear message
pointing to data/README.md instead of a stack trace)."""
import glob
import os
import os.path as osp
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from ..errors import DatasetError

CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
           'traffic light', 'traffic sign', 'vegetation', 'terrain', 'sky',
           'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
           'bicycle')
IGNORE_INDEX = 255
VALID_TRAIN_IDS = frozenset(range(len(CLASSES))) | {IGNORE_INDEX}
# Sizes of the official gtFine release.
OFFICIAL_COUNTS = dict(train=2975, val=500)
README_HINT = 'See data/README.md for how to download and prepare Cityscapes.'

IMG_SUFFIX = '_leftImg8bit.png'
TRAINID_SUFFIX = '_gtFine_labelTrainIds.png'
ID_SUFFIX = '_gtFine_labelIds.png'

# Cityscapes label id -> train id (cityscapesscripts/helpers/labels.py).
_ID_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
               22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16,
               32: 17, 33: 18}
ID_TO_TRAINID = np.full(256, IGNORE_INDEX, np.uint8)
TRAINID_TO_ID = np.zeros(256, np.uint8)    # ignore -> 0 ("unlabeled")
for _id, _tid in _ID_TRAINID.items():
    ID_TO_TRAINID[_id] = _tid
    TRAINID_TO_ID[_tid] = _id



def _convert_one(path: str) -> None:
    ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if ids is None:
        raise DatasetError(f'cannot decode label image {path}')
    cv2.imwrite(path[:-len(ID_SUFFIX)] + TRAINID_SUFFIX, ID_TO_TRAINID[ids])


def convert_label_ids(root: str, nproc: int = 1,
                      overwrite: bool = False) -> int:
    """Write ``*_gtFine_labelTrainIds.png`` next to every
    ``*_gtFine_labelIds.png`` under ``ROOT/gtFine`` (the same result as
    cityscapesscripts' createTrainIdLabelImgs for the 19 train classes).

    Existing train-id files are kept unless ``overwrite``. Returns the number
    of files written.
    """
    gt_root = osp.join(root, 'gtFine')
    if not osp.isdir(gt_root):
        raise DatasetError(f'{gt_root} does not exist. {README_HINT}')
    files = sorted(
        glob.glob(osp.join(gt_root, '**', '*' + ID_SUFFIX), recursive=True))
    if not overwrite:
        files = [
            f for f in files
            if not osp.exists(f[:-len(ID_SUFFIX)] + TRAINID_SUFFIX)
        ]
    if not files:
        return 0
    from mmengine.utils import track_parallel_progress, track_progress
    if nproc > 1:
        track_parallel_progress(_convert_one, files, nproc)
    else:
        track_progress(_convert_one, files)
    return len(files)


def _sample(items: Sequence, k: Optional[int]) -> Sequence:
    if k is None or len(items) <= k:
        return items
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in idx]


def check_cityscapes(root: str,
                     splits: Sequence[str] = ('train', 'val'),
                     max_files: Optional[int] = 50) -> Dict[str, int]:
    """Check the Cityscapes layout under ``root`` before training.

    Verifies, for every split, that ``leftImg8bit/SPLIT`` holds images,
    that every image has its ``*_gtFine_labelTrainIds.png`` and, on up to
    ``max_files`` files per split (all of them if None), that images decode
    and labels hold only train ids {0..18, 255}.

    Returns:
        dict: the number of images per split.

    Raises:
        DatasetError: with what is wrong and what to do.
    """
    if not osp.isdir(root):
        relative = ('' if osp.isabs(root) else
                    f' (a relative path: relative to the current folder '
                    f'{os.getcwd()}; run from the project root or give an '
                    'absolute data_root)')
        raise DatasetError(
            f'Cityscapes data root {root!r} does not exist{relative}. '
            f'{README_HINT} (For a quick try without Cityscapes, `make demo` '
            'trains on a generated synthetic dataset.)')
    counts = {}
    for split in splits:
        img_dir = osp.join(root, 'leftImg8bit', split)
        gt_dir = osp.join(root, 'gtFine', split)
        if not osp.isdir(img_dir):
            raise DatasetError(
                f'{img_dir} is missing: unpack leftImg8bit_trainvaltest.zip '
                f'into {root}. {README_HINT}')
        imgs = sorted(
            glob.glob(osp.join(img_dir, '*', '*' + IMG_SUFFIX)))
        if not imgs:
            raise DatasetError(
                f'{img_dir} holds no *{IMG_SUFFIX} images (expected '
                f'CITY/CITY_xxxxxx_xxxxxx{IMG_SUFFIX}). {README_HINT}')
        if not osp.isdir(gt_dir):
            raise DatasetError(
                f'{gt_dir} is missing: unpack gtFine_trainvaltest.zip into '
                f'{root}. {README_HINT}')
        labels = []
        for img in imgs:
            rel = osp.relpath(img, img_dir)[:-len(IMG_SUFFIX)]
            label = osp.join(gt_dir, rel + TRAINID_SUFFIX)
            if not osp.exists(label):
                if osp.exists(osp.join(gt_dir, rel + ID_SUFFIX)):
                    raise DatasetError(
                        f'{gt_dir} has *{ID_SUFFIX} but no *{TRAINID_SUFFIX}'
                        ' files: the labels are not converted to train ids. '
                        f'Run `python tools/convert_cityscapes.py {root}`. '
                        f'{README_HINT}')
                raise DatasetError(f'label {label} for image {img} is '
                                   f'missing. {README_HINT}')
            labels.append(label)
        for img, label in zip(_sample(imgs, max_files),
                              _sample(labels, max_files)):
            if cv2.imread(img, cv2.IMREAD_UNCHANGED) is None:
                raise DatasetError(f'image {img} cannot be decoded (corrupt '
                                   'or not an image); replace or remove it.')
            lab = cv2.imread(label, cv2.IMREAD_UNCHANGED)
            if lab is None:
                raise DatasetError(f'label {label} cannot be decoded (corrupt'
                                   ' or not an image); replace or remove it.')
            if lab.ndim != 2:
                raise DatasetError(
                    f'label {label} has {lab.shape[2]} channels; a '
                    'single-channel train-id image is expected (was the '
                    f'colour annotation used?). {README_HINT}')
            bad = sorted(set(np.unique(lab).tolist()) - VALID_TRAIN_IDS)
            if bad:
                raise DatasetError(
                    f'label {label} holds values {bad[:10]} outside the '
                    'train ids {0..18, 255}: labels must be converted with '
                    f'`python tools/convert_cityscapes.py {root} '
                    f'--overwrite`. {README_HINT}')
        counts[split] = len(imgs)
    return counts
