"""Python inference: repseg.apis.init_model (mmseg's init_model, strict and
fused) on training and deploy files, and deploy checkpoints that stock
mmseg reads with their class names."""
import warnings

import pytest
import torch

from repseg.apis import init_model, load_cfg
from repseg.deploy import build_segmentor, convert_checkpoint
from repseg.errors import CheckpointError
from repseg.reparam import find_unfused
from repseg.testing import randomize_bn_

from tests.utils import DEMO_CONFIG

META = [dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96))]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('infer')
    torch.manual_seed(4)
    cfg = load_cfg(DEMO_CONFIG)
    model = randomize_bn_(build_segmentor(cfg), seed=4)
    train = str(tmp / 'train.pth')
    torch.save(dict(state_dict=model.state_dict()), train)
    fused = str(tmp / 'fused.pth')
    convert_checkpoint(cfg, train, fused, input_size=(64, 96))
    return train, fused, str(tmp / 'fused.py')


def _logits(model, x):
    with torch.no_grad():
        return model.encode_decode(x, META)


def test_every_fitting_pair_gives_the_same_fused_model(files):
    train, fused, deploy_cfg = files
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    ref = init_model(DEMO_CONFIG, train, fused=False)
    assert find_unfused(ref)       # fused=False keeps the training form
    want = _logits(ref, x)
    for config, ckpt in ((DEMO_CONFIG, train), (deploy_cfg, fused),
                         (DEMO_CONFIG, fused)):
        model = init_model(config, ckpt)
        assert not find_unfused(model) and not model.training
        got = _logits(model, x)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
        assert model.dataset_meta['classes'][0] == 'road'
        assert len(model.dataset_meta['palette']) == 19
        assert model.cfg.model.decode_head.num_classes == 19


def test_a_checkpoint_of_another_model_is_one_clear_error(files, tmp_path):
    """Stock mmseg warns and runs a partly random model; repseg refuses."""
    other = load_cfg(DEMO_CONFIG, cfg_options={
        'model.decode_head.num_classes': 7,
        'model.auxiliary_head.num_classes': 7})
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=build_segmentor(other).state_dict()), path)
    with pytest.raises(CheckpointError) as e:
        init_model(DEMO_CONFIG, path)
    assert 'conv_seg.weight' in str(e.value)
    assert 'Use the config it was trained with' in str(e.value)
    assert len(str(e.value).splitlines()) <= 3


def test_stock_mmseg_reads_the_deploy_pair_with_its_class_names(files):
    from mmseg.apis import init_model as mmseg_init_model
    _, fused, deploy_cfg = files
    meta = torch.load(fused, weights_only=True)['meta']['dataset_meta']
    assert meta['classes'][:2] == ['road', 'sidewalk']
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = mmseg_init_model(deploy_cfg, fused, device='cpu')
    assert not [w for w in caught if 'dataset_meta' in str(w.message)]
    assert list(model.dataset_meta['classes']) == meta['classes']
