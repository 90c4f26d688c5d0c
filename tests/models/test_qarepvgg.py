"""The quantization-friendly QARepVGG block: its training form, exact
fusion (every arch kind and dilation mode, groups, odd sizes, random BN
statistics), strict reload into deploy=True, pretrained RepVGG weights as
the same function, and the INT8 failure mechanism it avoids."""
import re

import pytest
import torch
import torch.nn.functional as F

from repseg import RepVGG, reparameterize_model
from repseg.models.pretrained import load_pretrained
from repseg.models.repvgg import QARepVGGBlock, RepVGGBlock
from repseg.reparam.fusion import fuse_branches, is_batchnorm
from repseg.testing import max_rel_diff, randomize_bn_
from tests.utils import REL_TOL


def test_training_form_has_bn_on_3x3_and_after_the_sum_only():
    block = QARepVGGBlock(16, 16)
    assert isinstance(block.branch_1x1, torch.nn.Conv2d)      # plain conv
    assert block.branch_1x1.bias is None
    assert block.identity                                     # plain x
    norms = [n for n, m in block.named_modules() if is_batchnorm(m)]
    assert norms == ['branch_3x3.bn', 'post_norm']
    assert not QARepVGGBlock(16, 32).identity
    assert not QARepVGGBlock(16, 16, stride=2).identity


@pytest.mark.parametrize('arch', ['A0', 'B1g2', 'B2g4'])
@pytest.mark.parametrize('mode', ['none', 'full', 'fast'])
def test_fuses_exactly(arch, mode):
    model = RepVGG(arch, dilation_mode=mode, block_type='qarepvgg',
                   out_indices=(1, 2, 3, 4))
    randomize_bn_(model, seed=7).eval()
    assert all(isinstance(m, QARepVGGBlock) for m in model.modules()
               if isinstance(m, RepVGGBlock))
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        ref = model(x)
        fused = reparameterize_model(model)
        out = fused(x)
    assert max_rel_diff(ref, out) <= REL_TOL
    # the fused checkpoint reloads strictly into the deploy form
    deploy = RepVGG(arch, dilation_mode=mode, block_type='qarepvgg',
                    out_indices=(1, 2, 3, 4), deploy=True).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        assert max_rel_diff(ref, deploy(x)) <= REL_TOL


def test_unknown_block_type():
    with pytest.raises(ValueError, match="Unknown block_type 'qa'"):
        RepVGG('A0', block_type='qa')


@pytest.mark.parametrize('deploy_file', [False, True])
def test_pretrained_repvgg_weights_give_the_same_function(tmp_path,
                                                          deploy_file):
    src = randomize_bn_(RepVGG('A0', out_indices=(4, )), seed=2).eval()
    weights = reparameterize_model(src) if deploy_file else src
    path = str(tmp_path / 'a0.pth')
    torch.save({'state_dict': weights.state_dict()}, path)
    qa = RepVGG('A0', out_indices=(4, ), block_type='qarepvgg',
                init_cfg=dict(type='Pretrained', checkpoint=path))
    qa.init_weights()
    qa.eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert max_rel_diff(src(x), qa(x)) <= REL_TOL
    # the 1x1 branches start at zero, the BNs neutral
    assert all(b.branch_1x1.weight.abs().max() == 0 for b in qa.modules()
               if isinstance(b, QARepVGGBlock))


def _authors_layout(sd):
    """A QARepVGG state dict in the layout of the QARepVGG authors' public
    code (YOLOv6's QARepVGGBlock: rbr_dense.conv/bn, plain rbr_1x1 conv,
    post-sum ``bn``) on the official RepVGG stage names, with a
    classifier."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stem\.', 'stage0.', k)
        k = re.sub(r'^stage_(\d)\.', r'stage\1.', k)
        k = k.replace('.branch_3x3.', '.rbr_dense.').replace(
            '.branch_1x1.', '.rbr_1x1.').replace('.post_norm.', '.bn.')
        out[k] = v
    out['linear.weight'] = torch.randn(1000, 1280)
    out['linear.bias'] = torch.randn(1000)
    return out


@pytest.mark.parametrize('block_type', ['qarepvgg', 'repvgg'])
@pytest.mark.parametrize('deploy', [False, True])
def test_authors_qarepvgg_layout_loads_into_every_form(
        tmp_path, block_type, deploy):
    src = randomize_bn_(RepVGG('A0', out_indices=(1, 4),
                               block_type='qarepvgg'), seed=3).eval()
    for m in src.modules():      # non-zero 1x1 branches, random post BNs
        if isinstance(m, QARepVGGBlock):
            torch.nn.init.normal_(m.branch_1x1.weight, std=0.1)
    raw = _authors_layout(src.state_dict())
    assert 'stage1.0.rbr_1x1.weight' in raw and 'stage1.0.bn.weight' in raw
    path = str(tmp_path / 'qa_a0.pth')
    torch.save(raw, path)
    dst = RepVGG('A0', out_indices=(1, 4), block_type=block_type,
                 deploy=deploy)
    msg = load_pretrained(dst, path, logger=None)
    assert 'official layout, training-time qarepvgg file' in msg, msg
    if block_type == 'qarepvgg' and not deploy:
        assert msg.endswith('loaded as is).')
        # every tensor is the source's own (nothing fused or reset)
        for k, v in dst.state_dict().items():
            assert torch.equal(v, src.state_dict()[k]), k
    else:
        assert 'qarepvgg blocks fused on load' in msg, msg
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        for a, b in zip(src(x), dst.eval()(x)):
            assert max_rel_diff(a, b) <= REL_TOL


def _int8_weight_error(kernel, bias, x, channel):
    """Relative error of output ``channel`` with per-output-channel
    symmetric INT8 weights (what ONNX Runtime's per-channel QDQ does to a
    conv's weights)."""
    scale = kernel.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    q = torch.round(kernel / scale).clamp(-127, 127) * scale
    ref = F.conv2d(x, kernel, bias, padding=1)[:, channel]
    got = F.conv2d(x, q, bias, padding=1)[:, channel]
    return ((got - ref).norm() / ref.norm()).item()


def test_near_dead_identity_bn_breaks_int8_only_for_repvgg():
    """The failure mechanism (Chu et al.): a channel that is nearly always
    zero after the previous ReLU gets a tiny running_var in the identity
    BN, so gamma/sigma is huge on that channel's centre tap; the fused
    kernel's per-channel range is then set by that tap and the real 3x3
    weights of the channel round to zero in INT8. QARepVGG has no identity
    BN: the same 3x3 weights quantize fine."""
    torch.manual_seed(0)
    c, dead = 16, 3
    rep = RepVGGBlock(c, c).eval()
    qa = QARepVGGBlock(c, c).eval()
    with torch.no_grad():
        qa.branch_3x3.load_state_dict(rep.branch_3x3.state_dict())
        rep.branch_norm.running_var[dead] = 1e-6
        rep.branch_norm.weight[dead] = 2.0
    x = torch.rand(2, c, 24, 24)
    x[:, dead] *= 1e-4                          # the (nearly) dead channel
    k_rep, b_rep = fuse_branches(rep.branch_3x3.conv, rep.branch_3x3.bn,
                                 rep.branch_1x1.conv, rep.branch_1x1.bn,
                                 rep.branch_norm)
    k_qa, b_qa = qa._fused_kernel_bias()
    err_rep = _int8_weight_error(k_rep.float(), b_rep.float(), x, dead)
    err_qa = _int8_weight_error(k_qa.float(), b_qa.float(), x, dead)
    # the dead channel's output loses its real 3x3 weights under RepVGG
    assert err_rep > 0.5 and err_qa < 0.05, (err_rep, err_qa)
    assert err_rep > 10 * err_qa
