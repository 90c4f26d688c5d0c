"""Safe checkpoint reading (torch.load weights_only) and its errors."""
import argparse

import pytest
import torch

from repseg.engine import CheckpointError, load_state_dict_file
from repseg.models import checkpoint_kind


def _good(path, **extra):
    torch.save(dict(state_dict={'a.weight': torch.ones(2)}, **extra), path)


def test_reads_wrapped_and_prefixed(tmp_path):
    p = str(tmp_path / 'c.pth')
    torch.save({'state_dict': {'module.x': torch.zeros(1),
                               'module.y': torch.ones(1)}}, p)
    assert list(load_state_dict_file(p)) == ['x', 'y']


def test_missing_truncated_and_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        load_state_dict_file(str(tmp_path / 'none.pth'))
    p = tmp_path / 'c.pth'
    _good(str(p))
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or not'):
        load_state_dict_file(str(p))
    t = tmp_path / 'notes.txt'
    t.write_text('hello, I am not a checkpoint')
    with pytest.raises(CheckpointError, match='truncated or not'):
        load_state_dict_file(str(t))
    e = tmp_path / 'empty.pth'
    torch.save({'epoch': 3}, str(e))
    with pytest.raises(CheckpointError, match='holds no state dict'):
        load_state_dict_file(str(e))


def test_unsafe_pickle_refused_unless_allowed(tmp_path):
    p = str(tmp_path / 'c.pth')
    # an arbitrary Python object that weights_only loading does not allow
    _good(p, args=argparse.Namespace(lr=0.1))   # as old training scripts did
    with pytest.raises(CheckpointError, match='full unpickling.*trust'):
        load_state_dict_file(p)
    assert list(load_state_dict_file(p, allow_unsafe=True)) == ['a.weight']


def test_checkpoint_kind():
    t = torch.zeros(1)
    assert checkpoint_kind({'backbone.stem.branch_3x3.conv.weight': t}) == \
        'training'
    assert checkpoint_kind({'backbone.stem.branch_reparam.weight': t}) == \
        'fused'
    with pytest.raises(CheckpointError, match='mixes'):
        checkpoint_kind({'b.stem.branch_reparam.weight': t,
                         'b.s.branch_3x3.conv.weight': t})


def test_training_checkpoint_into_deploy_model_explains(tmp_path):
    from mmseg.registry import MODELS
    from repseg.apis import load_any_checkpoint

    def seg(deploy, arch='A0'):
        return MODELS.build(dict(
            type='EncoderDecoder',
            backbone=dict(type='RepVGG', arch=arch, out_indices=(4, ),
                          deploy=deploy),
            decode_head=dict(type='FCNHead', in_channels=1280, in_index=0,
                             channels=8, num_convs=1, num_classes=19)))

    train_ckpt = str(tmp_path / 'train.pth')
    torch.save({'state_dict': seg(False).state_dict()}, train_ckpt)
    with pytest.raises(CheckpointError,
                       match='TRAINING checkpoint.*deploy=True.*convert.py'):
        load_any_checkpoint(seg(True), train_ckpt)
    # the reverse: a fused checkpoint into a training-time config is
    # accepted (the model is fused to match) and says so
    from repseg import reparameterize_model
    fused_ckpt = str(tmp_path / 'fused.pth')
    torch.save({'state_dict': reparameterize_model(seg(False)).state_dict()},
               fused_ckpt)
    assert load_any_checkpoint(seg(False), fused_ckpt) == 'fused'
    assert load_any_checkpoint(seg(True), fused_ckpt) == 'fused'
    # a checkpoint of another arch: a short explanation, not a key wall
    with pytest.raises(CheckpointError, match='another arch'):
        load_any_checkpoint(seg(False, 'A1'), train_ckpt)


def test_a_typo_in_an_override_key_names_the_nearest_setting():
    from repseg.engine.config import load_cfg
    from repseg.errors import UsageError
    from tests.utils import DEMO_CONFIG
    with pytest.raises(UsageError, match=r"the override 'train_cfg.max_iter' "
                       r"names no setting of the config: did you mean "
                       r"'train_cfg.max_iters'\?"):
        load_cfg(DEMO_CONFIG, cfg_options={'train_cfg.max_iter': 4})
    # list indices and new settings without a close sibling still work
    cfg = load_cfg(DEMO_CONFIG, cfg_options={'param_scheduler.0.end': 9,
                                             'model.test_cfg.my_flag': 1})
    assert cfg.param_scheduler[0].end == 9
