"""Fixtures of the whole suite; shared helpers are in tests/utils.py."""
import pytest
import torch

import repseg  # noqa: F401  (registers the modules)
from mmseg.utils import register_all_modules
from repseg.datasets import generate_synthetic_cityscapes

from .utils import ROOT  # noqa: F401  (sets PYTHONPATH for subprocesses)

register_all_modules(init_default_scope=True)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset in the Cityscapes layout (made once)."""
    root = str(tmp_path_factory.mktemp('data') / 'synthetic_cityscapes')
    generate_synthetic_cityscapes(root, num_train=8, num_val=4, seed=0)
    return root
