"""FusedEvalHook: validation evaluates a fused copy, training continues on
the untouched multi-branch model, and the metrics equal a by-hand evaluation
of the fused model."""
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner

from repseg import find_unfused, reparameterize_model
from repseg.engine import FusedEvalHook
from repseg.models import RepVGGBlock
from repseg.ops import count_nnpack_convs, nnpack_available, use_nnpack_convs

from tests.utils import DEMO_CONFIG, small_cfg


@pytest.fixture(scope='module')
def trained_runner(synthetic_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('hook')
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, work, crop=64, iters=4,
                    val_interval=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _hook(runner):
    hooks = [h for h in runner.hooks if isinstance(h, FusedEvalHook)]
    assert len(hooks) == 1
    return hooks[0]


def test_validation_used_a_fused_copy(trained_runner):
    runner = trained_runner
    hook = _hook(runner)
    fused = hook.last_fused_model
    assert fused is not None and fused is not runner.model
    assert find_unfused(fused) == []
    assert all(m.deploy for m in fused.modules()
               if isinstance(m, RepVGGBlock))
    # the live model is still the multi-branch training model
    assert runner.model.backbone.stem.branch_3x3 is not None
    assert find_unfused(runner.model) != []
    assert hook.last_max_diff is not None
    assert hook.last_max_diff <= 1e-4 * hook.last_max_abs
    # conv_impl='auto' on the CPU: the fused copy's 3x3 convs run NNPACK,
    # the live model's do not
    n_fast, n_all = count_nnpack_convs(fused)
    assert (n_fast > 0) == nnpack_available() and n_fast < n_all
    assert count_nnpack_convs(runner.model)[0] == 0


def test_validation_leaves_training_model_untouched(trained_runner):
    runner = trained_runner
    runner.model.train()
    state = {k: v.clone() for k, v in runner.model.state_dict().items()}
    metrics = runner.val_loop.run()
    assert 'mIoU' in metrics
    assert runner.model.training            # mode restored/untouched
    assert find_unfused(runner.model) != []
    after = runner.model.state_dict()
    assert state.keys() == after.keys()
    for k in state:
        assert torch.equal(state[k], after[k]), k


def test_metrics_equal_by_hand_fused_evaluation(trained_runner):
    runner = trained_runner
    metrics = runner.val_loop.run()
    fused = use_nnpack_convs(reparameterize_model(runner.model))
    evaluator = Evaluator(dict(type='IoUMetric', iou_metrics=['mIoU']))
    evaluator.dataset_meta = runner.val_dataloader.dataset.metainfo
    with torch.no_grad():
        for batch in runner.val_dataloader:
            evaluator.process(fused.test_step(batch), batch)
    by_hand = evaluator.evaluate(len(runner.val_dataloader.dataset))
    for key in ('mIoU', 'mAcc', 'aAcc'):
        assert by_hand[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_hook_passes_already_fused_model(trained_runner):
    runner = trained_runner
    hook = _hook(runner)
    live = runner.model
    runner.model = deployed = reparameterize_model(live)
    try:
        hook.conv_impl = 'native'
        runner.val_loop.run()
        assert hook.last_fused_model is None   # evaluated as it is
        assert runner.model is deployed
        hook.conv_impl = 'auto'
        runner.val_loop.run()
        if nnpack_available():   # a copy with NNPACK convs; deployed intact
            assert count_nnpack_convs(hook.last_fused_model)[0] > 0
            assert count_nnpack_convs(deployed)[0] == 0
        assert runner.model is deployed
    finally:
        hook.conv_impl = 'auto'
        runner.model = live


def test_bad_conv_impl():
    with pytest.raises(ValueError, match='conv_impl must be one of'):
        FusedEvalHook(conv_impl='winograd')


def _count_calls(model, name='test_step'):
    calls = []
    original = getattr(model, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(model, name, counted)
    return calls


def test_hook_compares_against_the_live_unfused_model(trained_runner,
                                                      monkeypatch):
    """A fused copy that differs from the live model (a planted, non-fusable
    difference: +0.5 on one class's logit) is reported as it is: the
    reference logits come from the live unfused model."""
    from repseg.engine import hooks as hooks_module
    real = hooks_module.reparameterize_model

    def perturbed(model, inplace=False):
        fused = real(model, inplace=inplace)
        with torch.no_grad():
            fused.decode_head.conv_seg.bias[0] += 0.5
        return fused

    monkeypatch.setattr(hooks_module, 'reparameterize_model', perturbed)
    hook = _hook(trained_runner)
    trained_runner.val_loop.run()
    assert hook.last_max_diff == pytest.approx(0.5, abs=1e-3)


def test_the_loop_evaluates_the_fused_copy(trained_runner, monkeypatch):
    """Every validation batch runs through the fused copy; the live model
    runs once (the equivalence check's reference)."""
    from repseg.engine import hooks as hooks_module
    real = hooks_module.reparameterize_model
    counts = {}

    def counting(model, inplace=False):
        fused = real(model, inplace=inplace)
        # the copy carries the live model's counting wrapper: drop it
        vars(fused).pop('test_step', None)
        vars(fused).pop('val_step', None)
        counts['fused_check'] = _count_calls(fused)
        counts['fused_loop'] = _count_calls(fused, 'val_step')
        return fused

    monkeypatch.setattr(hooks_module, 'reparameterize_model', counting)
    runner = trained_runner
    live_check = _count_calls(runner.model)
    live_loop = _count_calls(runner.model, 'val_step')
    try:
        runner.val_loop.run()
    finally:
        del runner.model.test_step      # back to the class methods
        del runner.model.val_step
    assert len(counts['fused_loop']) == len(runner.val_dataloader) > 0
    assert len(live_loop) == 0
    # the equivalence check: one forward of each
    assert len(counts['fused_check']) == len(live_check) == 1


def test_hook_counts_what_ran_nnpack(trained_runner, monkeypatch):
    """At a size where the size policy sends convs to NNPACK (whole
    512x256 images: stage 1 runs at 128x64), the hook's count equals
    the NNPACK calls that really happened (counted at the NNPACK call)."""
    from repseg.ops import nnpack_conv
    if not nnpack_available():
        pytest.fail('NNPACK is not available in this torch build')
    calls = []
    real = nnpack_conv.nnpack_conv3x3

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nnpack_conv, 'nnpack_conv3x3', counted)
    runner = trained_runner
    for t in runner.val_dataloader.dataset.pipeline.transforms:
        if type(t).__name__ == 'Resize':
            monkeypatch.setattr(t, 'scale', (512, 256))
    hook = _hook(runner)
    runner.val_loop.run()
    runs = hook.last_nnpack_runs
    assert runs['nnpack_calls'] == len(calls) > 0
    assert 0 < runs['convs'] <= count_nnpack_convs(hook.last_fused_model)[0]
