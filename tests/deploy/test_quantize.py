"""Calibration data of tools/quantize.py: train-split images, through the
train pipeline by default, at the model's input size."""
import numpy as np
import pytest

from repseg.apis import UsageError
from repseg.deploy import build_fused
from repseg.deploy.quantize import calibration_inputs
from tests.utils import DEMO_CONFIG, small_cfg


def test_calibration_inputs(synthetic_root, tmp_path):
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path)
    model = build_fused(cfg, None)
    train = calibration_inputs(cfg, model, 3, (64, 128))
    test = calibration_inputs(cfg, model, 3, (64, 128), pipeline='test')
    assert [x.shape for x in train] == [(1, 3, 64, 128)] * 3
    assert [x.shape for x in test] == [(1, 3, 64, 128)] * 3
    # normalized like the model's preprocessor (ImageNet mean/std)
    assert all(abs(float(x.mean())) < 3 and x.dtype == np.float32
               for x in train)
    # the train pipeline's random scale/crop/distortion: other pixels than
    # the deterministic test pipeline on the same images
    assert any(not np.allclose(a, b) for a, b in zip(train, test))
    with pytest.raises(UsageError, match="'train' or 'test'"):
        calibration_inputs(cfg, model, 1, (64, 128), pipeline='val')
    with pytest.raises(UsageError, match='train split of the config holds 8'):
        calibration_inputs(cfg, model, 9, (64, 128))
