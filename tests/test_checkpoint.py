"""Safe checkpoint reading (torch.load weights_only) and its errors."""
import argparse

import pytest
import torch

from repseg.engine import CheckpointError, checkpoint_kind, load_state_dict_file


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
