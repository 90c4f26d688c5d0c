"""Helpers shared by the tests (imported as ``tests.utils``; fixtures live
in conftest.py)."""
import os
import os.path as osp
import sys

from repseg.apis import load_cfg
from repseg.ops.cpu import cpu_flags
from repseg.reparam import REL_TOL  # noqa: F401  (the suite's tolerance)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the tools run in subprocesses import this checkout's repseg, whatever
# copy is installed
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
CONFIG_DIR = osp.join(ROOT, 'configs')
#: the tools (their shared tools/_cli.py) and the developers' instruments
#: (tools/dev), importable by the tests as the scripts import them
DEV_TOOLS = osp.join(ROOT, 'tools', 'dev')
for _dir in (osp.join(ROOT, 'tools'), DEV_TOOLS):
    if _dir not in sys.path:
        sys.path.insert(0, _dir)
DEMO_CONFIG = osp.join(CONFIG_DIR, 'pspnet_repvgg_a0_synthetic.py')


def tool_module(path):
    """A tools/ script imported as a module (as it runs: its folder on
    sys.path), without running its main()."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.relpath(path, ROOT)[:-3].replace('/', '_'), path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, osp.dirname(path))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.pop(0)
    return mod


def small_cfg(config, data_root, work_dir, crop=64, iters=1,
              val_interval=None, cfg_options=None):
    """Load a shipped config (through repseg.apis.load_cfg, which makes it
    CPU-ready: SyncBN -> BN) and shrink its data and schedule for a quick
    CPU run on the synthetic dataset; the model itself is unchanged except
    that nothing pretrained is loaded."""
    options = {
        'model.pretrained': None,
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': (crop, crop),
        'train_cfg.max_iters': iters,
        'train_cfg.val_interval': val_interval or iters,
        'param_scheduler.0.end': iters,
        'default_hooks.checkpoint.interval': iters,
        'default_hooks.logger.interval': 1,
        'env_cfg.cudnn_benchmark': False,
        'randomness.seed': 0,
    }
    for split in ('train', 'val', 'test'):
        options.update({
            f'{split}_dataloader.dataset.data_root': data_root,
            f'{split}_dataloader.num_workers': 0,
            f'{split}_dataloader.persistent_workers': False,
        })
    options.update(cfg_options or {})
    cfg = load_cfg(config, work_dir=str(work_dir), cfg_options=options)
    cfg.train_dataloader.batch_size = 2
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'RandomResize':
            t['scale'] = (2 * crop, crop)
        elif t['type'] == 'RandomCrop':
            t['crop_size'] = (crop, crop)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        for t in loader.dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = (2 * crop, crop)
    if cfg.model.test_cfg.get('mode') == 'slide':
        cfg.model.test_cfg.crop_size = (crop, crop)
        cfg.model.test_cfg.stride = (crop * 2 // 3, crop * 2 // 3)
    return cfg


#: tests that hide CPU features (tools/dev/cpu_isa.py --as LEVEL) and compare
#: with the unmasked kernels need the full ISA and CPUID faulting
CAN_MASK_ISA = ({'cpuid_fault', 'avx512f', 'avx512_vnni'}
                <= (cpu_flags() or set())
                and os.uname().machine == 'x86_64')


def run_as_isa(level, *command, timeout=300):
    """Run ``command`` through tools/dev/cpu_isa.py ``--as level``."""
    import subprocess
    return subprocess.run(
        ['python', osp.join(DEV_TOOLS, 'cpu_isa.py'), '--as', level,
         '--', *command], capture_output=True, text=True, timeout=timeout)


def shared_port() -> int:
    """A free TCP port for launchers that must agree on one before either
    binds it (two "nodes" of one test), taken BELOW the kernel's ephemeral
    range: ports the kernel hands out (to ``bind(0)``, to outgoing
    connections, to gloo's own listeners in other tests running at the same
    time) are never taken from there, so the port stays free between this
    check and the launcher's bind unless a process asks for it by number."""
    import random
    import socket
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random(os.getpid())
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        with socket.socket() as sock:
            try:
                sock.bind(('127.0.0.1', port))
            except OSError:
                continue
        return port
    raise RuntimeError('no free port below the ephemeral range')


def one_error_line(proc) -> str:
    """A tool (``subprocess.run`` result) failed with exactly one line, an
    ``error:`` line, and no traceback; returns it."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return lines[-1]


def random_model(root, tmp, name, options=None, seed=0):
    """(config file, random checkpoint with randomized BN, cfg) of the
    shrunk demo model on the synthetic data under ``tmp``, the config
    written as ``NAME.py`` and loaded as the tools load it."""
    import torch

    from repseg.deploy import build_segmentor
    from repseg.testing import randomize_bn_
    cfg = small_cfg(DEMO_CONFIG, root, tmp / f'w_{name}',
                    cfg_options=options)
    # mmseg's inference_model reads the top-level test_pipeline, the test
    # loop (and repseg) the test dataloader's: the same in real configs
    cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline
    path = str(tmp / f'{name}.py')
    cfg.dump(path)
    cfg = load_cfg(path)
    torch.manual_seed(seed)
    ckpt = str(tmp / f'{name}.pth')
    torch.save(dict(state_dict=randomize_bn_(build_segmentor(cfg),
                                             seed=seed + 2).state_dict()),
               ckpt)
    return path, ckpt, cfg


def random_onnx(root, tmp, name='demo', seed=3):
    """(config file, checkpoint, ONNX file ``m.onnx``) of
    :func:`random_model`, exported without verification."""
    from repseg.deploy.onnx import ExportSettings, export_model
    path, ckpt, cfg = random_model(root, tmp, name, seed=seed)
    onnx = str(tmp / 'm.onnx')
    export_model(cfg, ckpt, onnx, ExportSettings(verify=False))
    return path, ckpt, onnx


def label_agreement(ref, labels, tie):
    """(share of ``labels`` equal to the reference's, the share among the
    pixels whose two best logits differ by more than ``tie`` times the
    largest |logit|) of ``ref`` = (reference labels, logits ``(C, H, W)``)."""
    import numpy as np
    want, logits = ref
    assert labels.shape == want.shape
    top2 = np.sort(logits, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > tie * np.abs(logits).max()
    same = labels == want
    return float(same.mean()), float(same[clear].mean())
