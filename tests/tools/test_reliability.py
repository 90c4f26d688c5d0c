"""Faults and scale: a SIGKILLed training resumes from its newest complete
checkpoint; 2 CPU processes (torchrun, gloo) train and evaluate like one."""
import glob
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.utils import DEMO_CONFIG, ROOT, shared_port, small_cfg

# tools run as subprocesses, as users run them (CI runs them all)
pytestmark = pytest.mark.slow

TRAIN = osp.join(ROOT, 'tools', 'train.py')


def _dump(cfg, path):
    cfg.dump(str(path))
    return str(path)


def _final_state(work_dir, it):
    ckpt = torch.load(osp.join(work_dir, f'iter_{it}.pth'),
                      weights_only=True)
    return ckpt['meta']['iter'], ckpt['optimizer']['param_groups'][0]['lr']


def _last_checkpoint(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip()


def test_sigkill_then_resume_matches_uninterrupted(synthetic_root, tmp_path):
    iters = 8
    # no dropout: the resumed run does not replay the killed run's torch RNG
    # draws (the data order and augmentations it does replay)
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path / 'x', crop=64,
                    iters=iters, val_interval=1000,
                    cfg_options={'default_hooks.checkpoint.interval': 2,
                                 'default_hooks.checkpoint.max_keep_ckpts':
                                 -1,
                                 'model.decode_head.dropout_ratio': 0.0,
                                 'model.auxiliary_head.dropout_ratio': 0.0})
    path = _dump(cfg, tmp_path / 'cfg.py')

    ref_dir = str(tmp_path / 'ref')
    subprocess.run([sys.executable, TRAIN, path, '--work-dir', ref_dir],
                   check=True, capture_output=True, cwd=ROOT)

    run_dir = str(tmp_path / 'run')
    proc = subprocess.Popen(
        [sys.executable, TRAIN, path, '--work-dir', run_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline:
        last = _last_checkpoint(run_dir)
        if last and last.endswith('iter_2.pth'):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail('training never wrote its iter_2 checkpoint')
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = _last_checkpoint(run_dir)
    done = int(re.search(r'iter_(\d+)\.pth', newest).group(1))
    assert done < iters, 'the run finished before it could be killed'
    # a half-written checkpoint (as a kill during saving leaves) must not
    # be picked up
    with open(osp.join(run_dir, f'iter_{done + 2}.pth'), 'wb') as f:
        f.write(b'PK\x03\x04 half written')

    proc = subprocess.run(
        [sys.executable, TRAIN, path, '--work-dir', run_dir, '--resume'],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert re.search(rf'resumed .*iter_{done}\.pth|Load checkpoint from '
                     rf'.*iter_{done}\.pth', log, re.I), log[-3000:]
    assert re.search(rf'resumed epoch: 0, iter: {done}', log), log[-3000:]
    it_ref, lr_ref = _final_state(ref_dir, iters)
    it_run, lr_run = _final_state(run_dir, iters)
    assert it_run == it_ref == iters
    assert lr_run == pytest.approx(lr_ref, rel=1e-12, abs=1e-15)
    # at an intermediate iteration after the resume (poly LR not yet 0):
    # the same iteration, LR, weights and SGD momentum buffers as the
    # uninterrupted run
    mid = done + 2
    assert mid < iters
    ref = torch.load(osp.join(ref_dir, f'iter_{mid}.pth'), weights_only=True)
    run = torch.load(osp.join(run_dir, f'iter_{mid}.pth'), weights_only=True)
    assert run['meta']['iter'] == ref['meta']['iter'] == mid
    lr = ref['optimizer']['param_groups'][0]['lr']
    assert lr > 0
    assert run['optimizer']['param_groups'][0]['lr'] == pytest.approx(
        lr, rel=1e-12)
    for k, v in ref['state_dict'].items():
        if v.dtype.is_floating_point:
            assert torch.allclose(run['state_dict'][k], v, rtol=1e-4,
                                  atol=1e-6), k
    ref_state = ref['optimizer']['state']
    run_state = run['optimizer']['state']
    assert ref_state and ref_state.keys() == run_state.keys()
    for i in ref_state:
        assert torch.allclose(run_state[i]['momentum_buffer'],
                              ref_state[i]['momentum_buffer'], rtol=1e-4,
                              atol=1e-6), i


def _miou(text):
    found = re.findall(r'mIoU: ([0-9.]+)', text)
    assert found, text[-3000:]
    return float(found[-1])


def _assert_ranks_in_step(work, iters):
    """Both ranks (SaveRankWeightsHook's files) ran ``iters`` iterations
    and hold identical weights that moved."""
    ranks = [torch.load(osp.join(work, f'rank{r}_weights.pt'),
                        weights_only=True) for r in (0, 1)]
    assert ranks[0]['iter'] == ranks[1]['iter'] == iters
    for name, after in ranks[0]['after'].items():
        assert torch.equal(after, ranks[1]['after'][name]), name
    moved = [n for n, p in ranks[1]['after'].items()
             if not torch.equal(p, ranks[1]['before'][n])]
    assert len(moved) >= 0.9 * len(ranks[1]['after'])


def test_two_process_training_and_evaluation(synthetic_root, tmp_path):
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path / 'x', crop=64,
                    iters=4, val_interval=4)
    cfg.custom_imports.imports.append('tests.dist_helpers')
    cfg.custom_hooks.append(dict(type='SaveRankWeightsHook'))
    path = _dump(cfg, tmp_path / 'cfg.py')
    work = str(tmp_path / 'dist')
    # no PORT: one node rendezvous on a port the launcher binds itself
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable)
    env.pop('PORT', None)
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), path, '2',
         '--work-dir', work], capture_output=True, text=True, cwd=ROOT,
        env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'GPU number: 2' in out, out[-3000:]   # mmengine's world size
    # both ranks stepped (DDP all-reduces every step) and rank 0 alone
    # wrote the checkpoint and the logs
    assert sorted(os.listdir(work)).count('iter_4.pth') == 1
    # both ranks stepped and hold the same weights afterwards (DDP averaged
    # the gradients of their different batches)
    _assert_ranks_in_step(work, 4)
    logs = glob.glob(osp.join(work, '*', '*.log'))
    assert len(logs) == 1, logs
    dist_miou = _miou(out)
    # evaluation gathered both ranks' halves: the same mIoU as one process
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), path,
         osp.join(work, 'iter_4.pth'), '--work-dir', str(tmp_path / 't')],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _miou(proc.stdout + proc.stderr) == pytest.approx(dist_miou,
                                                            abs=0.011)


def test_two_nodes_train_in_step(synthetic_root, tmp_path):
    """Two "nodes" (two torchrun launchers of tools/dist_train.sh on
    127.0.0.1, NNODES=2, one process each) train 2 iterations together:
    both ranks end with identical weights that moved."""
    cfg = small_cfg(DEMO_CONFIG, synthetic_root, tmp_path / 'x', crop=64,
                    iters=2, val_interval=2)
    cfg.custom_imports.imports.append('tests.dist_helpers')
    cfg.custom_hooks.append(dict(type='SaveRankWeightsHook'))
    path = _dump(cfg, tmp_path / 'cfg.py')
    work = str(tmp_path / 'nodes')
    base = dict(os.environ, NNODES='2', MASTER_ADDR='127.0.0.1',
                PORT=str(shared_port()), OMP_NUM_THREADS='1',
                PYTHON=sys.executable)
    procs = [subprocess.Popen(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), path, '1',
         '--work-dir', work], cwd=ROOT, env=dict(base, NODE_RANK=str(rank)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    assert 'GPU number: 2' in outs[0], outs[0][-3000:]   # world size 2
    _assert_ranks_in_step(work, 2)
