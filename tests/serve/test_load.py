"""The load instrument (tools/dev/serve_load.py), short: its own process
against a served network, a few seconds, the table's counts (every
request answered 200 while the clients do not exceed the queue bound),
and its watchdog ending a run whose server stalls."""
import os.path as osp
import subprocess
import sys
import threading

import cv2
import numpy as np

from tests.serve.helpers import fake_network, fake_service, running
from tests.utils import ROOT

TOOL = osp.join(ROOT, 'tools', 'dev', 'serve_load.py')


def _load(url, folder, *flags):
    return subprocess.run(
        [sys.executable, TOOL, '--url', url, '--images', str(folder),
         *flags], capture_output=True, text=True, cwd=ROOT, timeout=120)


def _rows(stdout):
    """clients -> (200s, 503s, errors) of the table."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 10 and cells[0].isdigit():
            out[int(cells[0])] = tuple(int(c) for c in cells[5:8])
    return out


def test_the_instrument_counts_and_its_watchdog_fires(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f'{i}.png'),
                    np.full((40, 60, 3), 50 * i, np.uint8))
    net, _ = fake_network(requests=2, sleep=0.01)
    with running(fake_service(net)) as url:   # room for 2 + 4
        proc = _load(url, tmp_path, '--clients', '1', '4', '--seconds', '1.5')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'CPU ISA: ' in proc.stdout
    rows = _rows(proc.stdout)
    assert set(rows) == {1, 4}, proc.stdout
    for clients, (ok, busy, errors) in rows.items():
        assert ok > 0 and busy == 0 and errors == 0, (clients, proc.stdout)
    gate = threading.Event()
    net, _ = fake_network(gate=gate)
    try:
        with running(fake_service(net)) as url:
            proc = _load(url, tmp_path, '--clients', '1', '--seconds', '30',
                         '--stall', '2')
            gate.set()
    finally:
        gate.set()
    assert proc.returncode == 3, proc.stdout + proc.stderr[-2000:]
    assert 'watchdog: no request finished in 2 s' in proc.stderr
    assert 'File "' in proc.stderr   # the stacks
