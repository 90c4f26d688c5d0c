# Copyright (c) repseg contributors. All rights reserved.
"""A small synthetic dataset in the exact Cityscapes folder and file-name
layout, for the demo and the tests (no download possible here).

Scenes are street-like: sky at the top, road and sidewalk at the bottom, a
band of buildings/vegetation in between, and random objects (cars, people,
poles, signs, ...) on top. Every one of the 19 Cityscapes train classes has
its own colour and texture, so a network can learn them, and appears in the
data. A strip at the bottom of some images is "ego vehicle", labelled 255
(ignore), as in Cityscapes.

Written files (``SPLIT`` in train/val, ``CITY`` a fake city)::

    ROOT/leftImg8bit/SPLIT/CITY/CITY_000000_000019_leftImg8bit.png
    ROOT/gtFine/SPLIT/CITY/CITY_000000_000019_gtFine_labelTrainIds.png
    ROOT/gtFine/SPLIT/CITY/CITY_000000_000019_gtFine_labelIds.png
"""
import os
import os.path as osp
from typing import Dict, Optional, Sequence

import cv2
import numpy as np

from .cityscapes import CLASSES, TRAINID_TO_ID

CITIES = {'train': ('aachen', 'bochum'), 'val': ('frankfurt', )}

# Base colour (RGB) and texture (0 flat, 1 stripes, 2 checker, 3 noise,
# 4 dots) of each train id.
_STYLE = [
    ((128, 64, 128), 0),   # road
    ((244, 35, 232), 1),   # sidewalk
    ((70, 70, 70), 2),     # building
    ((102, 102, 156), 1),  # wall
    ((190, 153, 153), 4),  # fence
    ((153, 153, 153), 0),  # pole
    ((250, 170, 30), 0),   # traffic light
    ((220, 220, 0), 2),    # traffic sign
    ((107, 142, 35), 3),   # vegetation
    ((152, 251, 152), 3),  # terrain
    ((70, 130, 180), 0),   # sky
    ((220, 20, 60), 0),    # person
    ((255, 0, 0), 4),      # rider
    ((0, 0, 142), 0),      # car
    ((0, 0, 70), 1),       # truck
    ((0, 60, 100), 2),     # bus
    ((0, 80, 100), 4),     # train
    ((0, 0, 230), 3),      # motorcycle
    ((119, 11, 32), 1),    # bicycle
]
assert len(_STYLE) == len(CLASSES) == 19


def _texture(kind: int, h: int, w: int, rng: np.random.Generator):
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 1:
        return ((yy + xx) // 4 % 2) * 2.0 - 1.0
    if kind == 2:
        return ((yy // 6 + xx // 6) % 2) * 2.0 - 1.0
    if kind == 3:
        return rng.uniform(-1, 1, (h, w))
    if kind == 4:
        return ((yy % 8 < 3) & (xx % 8 < 3)) * 2.0 - 1.0
    return np.zeros((h, w))


def render_scene(height: int, width: int,
                 rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One synthetic street scene.

    Returns:
        dict: ``img`` (H, W, 3) uint8 RGB and ``label`` (H, W) uint8 train
        ids in {0..18, 255}.
    """
    label = np.empty((height, width), np.uint8)
    horizon = int(height * rng.uniform(0.3, 0.45))
    ground = int(height * rng.uniform(0.6, 0.7))
    label[:horizon] = 10                                   # sky
    label[horizon:ground] = rng.choice([2, 8, 3])          # band
    label[ground:] = 0                                     # road
    # sidewalks on both sides
    side = int(width * rng.uniform(0.1, 0.25))
    label[ground:, :side] = 1
    label[ground:, width - side:] = rng.choice([1, 9])
    # buildings/vegetation/walls/fences alternate along the band
    x = 0
    while x < width:
        w = int(rng.integers(width // 8, width // 3))
        label[horizon:ground, x:x + w] = rng.choice([2, 2, 3, 4, 8, 9])
        x += w
    # objects: (class, relative height range, aspect w/h range)
    objects = [(13, (0.15, 0.3), (1.2, 2.0)), (14, (0.2, 0.35), (1.0, 1.6)),
               (15, (0.25, 0.4), (1.5, 2.5)), (16, (0.25, 0.35), (2.5, 4.0)),
               (11, (0.15, 0.3), (0.3, 0.5)), (12, (0.15, 0.3), (0.4, 0.6)),
               (17, (0.1, 0.2), (1.0, 1.5)), (18, (0.1, 0.2), (1.0, 1.5)),
               (5, (0.3, 0.5), (0.05, 0.1)), (6, (0.08, 0.12), (0.4, 0.6)),
               (7, (0.08, 0.12), (0.8, 1.2))]
    n = int(rng.integers(4, 9))
    for idx in rng.choice(len(objects), size=n, replace=True):
        cls, (h0, h1), (a0, a1) = objects[idx]
        oh = max(3, int(height * rng.uniform(h0, h1)))
        ow = max(2, int(oh * rng.uniform(a0, a1)))
        # stand on the ground line region; lights/signs hang higher
        if cls in (6, 7):
            y1 = int(rng.integers(horizon, ground))
        else:
            y1 = int(rng.integers(ground - oh // 4, height))
        y0 = max(0, y1 - oh)
        x0 = int(rng.integers(0, max(1, width - ow)))
        if cls in (11, 12, 17, 18):   # round-ish objects
            cy, cx = (y0 + y1) // 2, x0 + ow // 2
            cv2.ellipse(label, (cx, cy), (max(1, ow // 2), max(1, oh // 2)),
                        0, 0, 360, int(cls), -1)
        else:
            label[y0:y1, x0:x0 + ow] = cls
    if rng.random() < 0.5:        # ego vehicle: ignored
        label[int(height * 0.93):] = 255

    img = np.zeros((height, width, 3), np.float64)
    for cls in np.unique(label):
        mask = label == cls
        if cls == 255:
            img[mask] = (20, 20, 20)
            continue
        colour, kind = _STYLE[cls]
        shade = rng.uniform(-25, 25)
        tex = _texture(kind, height, width, rng)[mask][:, None]
        img[mask] = np.asarray(colour, np.float64) + shade + 30 * tex
    img += rng.normal(0, 8, img.shape)
    return dict(img=np.clip(img, 0, 255).astype(np.uint8), label=label)


def generate_synthetic_cityscapes(root: str,
                                  num_train: int = 24,
                                  num_val: int = 8,
                                  height: int = 128,
                                  width: int = 256,
                                  seed: int = 0,
                                  label_ids: bool = True,
                                  train_ids: bool = True,
                                  image_mode: str = 'RGB',
                                  splits: Optional[Sequence[str]] = None,
                                  overwrite: bool = False) -> dict:
    """Write a synthetic dataset in the Cityscapes layout under ``root``.

    Args:
        root (str): Dataset root (the ``data_root`` of a config).
        num_train (int): Number of train images. Default: 24.
        num_val (int): Number of val images. Default: 8.
        height (int): Image height. Default: 128.
        width (int): Image width (Cityscapes is 1:2). Default: 256.
        seed (int): Random seed; the same seed gives the same files.
        label_ids (bool): Also write ``*_gtFine_labelIds.png`` (Cityscapes
            ids, as in the official download). Default: True.
        train_ids (bool): Write ``*_gtFine_labelTrainIds.png`` (what
            training reads); False mimics an unconverted download.
        image_mode (str): 'RGB', 'L' (grayscale) or 'RGBA' images.
        splits (Sequence[str], optional): Subset of ('train', 'val').
        overwrite (bool): Allow writing into a non-empty ``root``. Without
            it an existing dataset is never touched.

    Returns:
        dict: number of images written per split.
    """
    if osp.isdir(root) and os.listdir(root) and not overwrite:
        raise FileExistsError(
            f'{root} exists and is not empty; refusing to write a synthetic '
            'dataset over it. Choose another folder or pass overwrite=True.')
    counts = dict(train=num_train, val=num_val)
    splits = tuple(splits or counts)
    rng = np.random.default_rng(seed)
    written = {}
    for split in splits:
        cities = CITIES[split]
        for i in range(counts[split]):
            city = cities[i % len(cities)]
            stem = f'{city}_{i // len(cities):06d}_000019'
            scene = render_scene(height, width, rng)
            img_dir = osp.join(root, 'leftImg8bit', split, city)
            gt_dir = osp.join(root, 'gtFine', split, city)
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(gt_dir, exist_ok=True)
            img = scene['img']
            if image_mode == 'L':
                img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            elif image_mode == 'RGBA':
                img = cv2.cvtColor(img, cv2.COLOR_RGB2BGRA)
            else:
                img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            cv2.imwrite(osp.join(img_dir, f'{stem}_leftImg8bit.png'), img)
            if train_ids:
                cv2.imwrite(
                    osp.join(gt_dir, f'{stem}_gtFine_labelTrainIds.png'),
                    scene['label'])
            if label_ids:
                cv2.imwrite(
                    osp.join(gt_dir, f'{stem}_gtFine_labelIds.png'),
                    TRAINID_TO_ID[scene['label']])
        written[split] = counts[split]
    return written
