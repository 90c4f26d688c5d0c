"""Synthetic dataset generator, label conversion and the dataset checker."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from repseg.datasets import (CLASSES, DatasetError, check_cityscapes,
                             convert_label_ids, generate_synthetic_cityscapes)

from tests.utils import ROOT


def _labels(root, split, suffix='_gtFine_labelTrainIds.png'):
    out = []
    for dirpath, _, files in sorted(os.walk(osp.join(root, 'gtFine', split))):
        out += [osp.join(dirpath, f) for f in sorted(files)
                if f.endswith(suffix)]
    return out


def test_generator_layout_and_labels(tmp_path):
    root = str(tmp_path / 'cs')
    written = generate_synthetic_cityscapes(root, num_train=12, num_val=4,
                                            seed=1)
    assert written == dict(train=12, val=4)
    assert check_cityscapes(root, max_files=None) == dict(train=12, val=4)
    assert osp.isfile(osp.join(root, 'leftImg8bit', 'train', 'aachen',
                               'aachen_000000_000019_leftImg8bit.png'))
    assert osp.isfile(osp.join(root, 'gtFine', 'val', 'frankfurt',
                               'frankfurt_000000_000019_gtFine_labelIds.png'))
    img = cv2.imread(osp.join(root, 'leftImg8bit', 'train', 'aachen',
                              'aachen_000000_000019_leftImg8bit.png'))
    assert img.shape == (128, 256, 3)
    seen = set()
    for f in _labels(root, 'train'):
        seen |= set(np.unique(cv2.imread(f, cv2.IMREAD_UNCHANGED)).tolist())
    assert seen <= set(range(19)) | {255}
    # the scenes are varied enough that most classes occur in 12 images
    assert len(seen - {255}) >= 15


def test_generator_is_deterministic_and_refuses_overwrite(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    generate_synthetic_cityscapes(a, num_train=2, num_val=1, seed=7)
    generate_synthetic_cityscapes(b, num_train=2, num_val=1, seed=7)
    for fa, fb in zip(_labels(a, 'train'), _labels(b, 'train')):
        assert np.array_equal(cv2.imread(fa), cv2.imread(fb))
    before = sorted(os.listdir(osp.join(a, 'gtFine', 'train', 'aachen')))
    with pytest.raises(FileExistsError, match='refusing'):
        generate_synthetic_cityscapes(a, num_train=1, num_val=1)
    assert sorted(os.listdir(osp.join(a, 'gtFine', 'train',
                                      'aachen'))) == before


def test_convert_label_ids_reproduces_train_ids(tmp_path):
    ref, raw = str(tmp_path / 'ref'), str(tmp_path / 'raw')
    generate_synthetic_cityscapes(ref, num_train=3, num_val=2, seed=3)
    generate_synthetic_cityscapes(raw, num_train=3, num_val=2, seed=3,
                                  train_ids=False)
    with pytest.raises(DatasetError,
                       match='not converted.*convert_cityscapes'):
        check_cityscapes(raw)
    assert convert_label_ids(raw) == 5
    assert convert_label_ids(raw) == 0          # existing files are kept
    for fr, fw in zip(_labels(ref, 'val'), _labels(raw, 'val')):
        assert np.array_equal(cv2.imread(fr, cv2.IMREAD_UNCHANGED),
                              cv2.imread(fw, cv2.IMREAD_UNCHANGED))
    assert check_cityscapes(raw) == dict(train=3, val=2)


def test_checker_missing_and_empty(tmp_path):
    with pytest.raises(DatasetError, match='does not exist.*data/README.md'):
        check_cityscapes(str(tmp_path / 'nope'))
    root = tmp_path / 'cs'
    root.mkdir()
    with pytest.raises(DatasetError, match='leftImg8bit.*missing'):
        check_cityscapes(str(root))
    (root / 'leftImg8bit' / 'train' / 'aachen').mkdir(parents=True)
    with pytest.raises(DatasetError, match='holds no'):
        check_cityscapes(str(root))


def test_checker_missing_label(tmp_path):
    root = str(tmp_path / 'cs')
    generate_synthetic_cityscapes(root, num_train=2, num_val=1,
                                  label_ids=False)
    os.remove(_labels(root, 'train')[0])
    with pytest.raises(DatasetError, match='label .* is missing'):
        check_cityscapes(root)


def test_checker_bad_values_and_undecodable(tmp_path):
    root = str(tmp_path / 'cs')
    generate_synthetic_cityscapes(root, num_train=2, num_val=1)
    label = _labels(root, 'val')[0]
    lab = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 33       # a Cityscapes id, not a train id
    cv2.imwrite(label, lab)
    with pytest.raises(DatasetError, match=r'values \[33\] outside'):
        check_cityscapes(root)
    lab[0, 0] = 0
    cv2.imwrite(label, lab)
    img = osp.join(root, 'leftImg8bit', 'train', 'aachen',
                   'aachen_000000_000019_leftImg8bit.png')
    with open(img, 'wb') as f:
        f.write(b'this is not a png')
    with pytest.raises(DatasetError, match='aachen_000000_000019_leftImg8bit'
                       '.png cannot be decoded'):
        check_cityscapes(root)


def test_check_dataset_tool_reports_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'check_dataset.py'),
         str(tmp_path / 'missing')], capture_output=True, text=True)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stderr
    assert 'data/README.md' in proc.stderr
    assert 'Traceback' not in proc.stderr
    root = str(tmp_path / 'cs')
    generate_synthetic_cityscapes(root, num_train=2, num_val=1)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'check_dataset.py'), root],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'train: 2 images' in proc.stdout and 'OK' in proc.stdout


def test_classes_are_cityscapes():
    assert len(CLASSES) == 19 and CLASSES[0] == 'road'
    assert CLASSES[-1] == 'bicycle'
