"""RepVGGBlock: exact fusion for every geometry, deploy form, idempotence."""
import copy

import pytest
import torch

from repseg import reparameterize_model
from repseg.models import RepVGGBlock
from repseg.testing import max_rel_diff, randomize_bn_

from tests.utils import REL_TOL


@pytest.mark.parametrize('in_ch,out_ch,stride,groups,dilation', [
    (8, 8, 1, 1, 1),    # identity branch present
    (8, 8, 1, 2, 1),    # identity branch with groups
    (8, 8, 1, 4, 2),    # groups + dilation
    (8, 16, 1, 1, 1),   # no identity (channels differ)
    (8, 8, 2, 1, 1),    # no identity (stride 2)
    (8, 16, 2, 4, 1),   # stride 2 with groups
    (8, 8, 1, 1, 4),    # dilation 4
    (3, 8, 2, 1, 1),    # stem-like
])
@pytest.mark.parametrize('size', [(64, 64), (65, 71)])
def test_block_fusion_is_exact(in_ch, out_ch, stride, groups, dilation, size):
    block = RepVGGBlock(in_ch, out_ch, stride, dilation, groups)
    randomize_bn_(block).eval()
    assert (block.branch_norm is not None) == (in_ch == out_ch
                                               and stride == 1)
    x = torch.randn(2, in_ch, *size)
    ref = block(x)
    block.switch_to_deploy()
    out = block(x)
    assert out.shape == ref.shape == (2, out_ch, (size[0] - 1) // stride + 1,
                                      (size[1] - 1) // stride + 1)
    assert max_rel_diff(ref, out) <= REL_TOL
    assert not hasattr(block, 'branch_3x3')
    assert block.branch_reparam.dilation == (dilation, dilation)
    assert block.branch_reparam.groups == groups


def test_switch_to_deploy_is_idempotent():
    block = randomize_bn_(RepVGGBlock(8, 8, groups=2)).eval()
    block.switch_to_deploy()
    state = copy.deepcopy(block.state_dict())
    block.switch_to_deploy()
    assert block.state_dict().keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(block.state_dict()[k], v)


def test_deploy_block_loads_fused_state_dict_strictly():
    block = randomize_bn_(RepVGGBlock(8, 8, groups=2, dilation=2)).eval()
    fused = reparameterize_model(block)
    deploy = RepVGGBlock(8, 8, groups=2, dilation=2, deploy=True).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(1, 8, 17, 19)
    assert max_rel_diff(block(x), deploy(x)) <= REL_TOL


def test_conversion_in_train_mode_uses_running_stats():
    """Converting a model that is in train mode must give the eval-mode
    function (the running statistics), not a silently wrong model."""
    block = randomize_bn_(RepVGGBlock(8, 8))
    x = torch.randn(4, 8, 16, 16)
    block.train()
    train_out = block(x)   # batch statistics (and updates running stats)
    block.eval()
    ref = block(x)         # eval semantics: running statistics
    block.train()
    assert max_rel_diff(ref, train_out) > 1e-2
    fused = reparameterize_model(block)
    assert not fused.training
    assert max_rel_diff(ref, fused(x)) <= REL_TOL
    # the source is untouched (a copy was converted) and still trains
    assert block.training and hasattr(block, 'branch_3x3')


def test_with_cp_gives_same_gradients():
    torch.manual_seed(1)
    a = RepVGGBlock(4, 4)
    b = copy.deepcopy(a)
    b.with_cp = True
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    a(x).sum().backward()
    ga = [p.grad.clone() for p in a.parameters()]
    b(x).sum().backward()
    for g, p in zip(ga, b.parameters()):
        torch.testing.assert_close(g, p.grad)
