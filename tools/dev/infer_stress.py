#!/usr/bin/env python
"""A developer's instrument: run ``tools/infer.py`` many times as users
run it and catch every run that does not end.

Each run segments a small folder made here (PNGs and JPEGs of several
sizes, a nested folder, a corrupt PNG, an empty file, a short video) with
``--recursive --overlay --areas`` and the progress bar on, under a
pseudo-terminal (``tty``) or with its output piped (``pipe``), for every
model file and mode asked for, optionally beside busy-loop processes (one
per core: ``--load 2``). A watchdog gives each run ``--timeout`` seconds;
when it fires, every thread's stack (Python and native frames,
``py-spy dump --native``) is written to ``OUT/hang-*.txt`` before the run
is killed. The closing table: runs, hangs and median seconds per model,
mode and terminal.

  python tools/dev/infer_stress.py --models int8/model_int8.xml \\
      model.onnx --modes throughput latency no-pipeline --runs 20 \\
      --load 2 --out stress
"""
import argparse
import json
import os
import os.path as osp
import pty
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = osp.dirname(osp.abspath(__file__))
TOOLS = osp.dirname(HERE)
ROOT = osp.dirname(TOOLS)
#: the last line of a run that ended
SUMMARY = re.compile(r'\d+ done, \d+ skipped \(done before\), \d+ failed in')
#: the flags of each mode (the default: throughput with the pipeline)
MODES = {'throughput': [], 'latency': ['--mode', 'latency'],
         'no-pipeline': ['--no-pipeline']}


def make_folder(root: str, seed: int = 0, frames: int = 12) -> str:
    """The folder every run segments (made once): images of several sizes
    and formats, one nested, a corrupt PNG, an empty file, a video."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'nested'), exist_ok=True)

    def image(h, w):
        img = rng.integers(0, 255, (h, w, 3), np.uint8)
        return cv2.GaussianBlur(img, (9, 9), 0)

    for i, (h, w, ext) in enumerate([(128, 256, '.png'), (256, 512, '.png'),
                                     (300, 200, '.jpg'), (517, 333, '.jpg'),
                                     (96, 160, '.jpg')]):
        sub = 'nested' if i == 4 else ''
        cv2.imwrite(osp.join(root, sub, f'img{i}{ext}'), image(h, w))
    ok, buf = cv2.imencode('.png', image(128, 256))
    with open(osp.join(root, 'corrupt.png'), 'wb') as f:
        f.write(buf.tobytes()[:len(buf) // 3])
    open(osp.join(root, 'empty.png'), 'wb').close()
    video = osp.join(root, 'drive.avi')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 10,
                             (256, 128))
    for _ in range(frames):
        writer.write(image(128, 256))
    writer.release()
    return root


def start_load(n: int) -> list:
    """``n`` busy-loop processes (extra CPU load), killed by :func:`stop`."""
    return [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
            for _ in range(n)]


def dump_stacks(pid: int, path: str) -> None:
    """Every thread's stack of process ``pid`` (py-spy, native frames too;
    the Python-only dump as well, which needs no symbols)."""
    with open(path, 'w') as f:
        for extra in (['--native'], []):
            f.write(f'### py-spy dump {" ".join(extra)}\n')
            f.flush()
            try:
                out = subprocess.run(
                    ['py-spy', 'dump', *extra, '--pid', str(pid)],
                    capture_output=True, text=True, timeout=60)
                f.write(out.stdout + out.stderr + '\n')
            except (OSError, subprocess.TimeoutExpired) as e:
                f.write(f'py-spy failed: {e}\n')


def one_run(model: str, mode: str, tty: bool, folder: str, out: str,
            timeout: float, hang_file: str, extra=()) -> dict:
    """One tools/infer.py run under the watchdog: ``seconds``, ``status``
    ('ok', 'failed' with its exit code, 'hang') and the last lines."""
    cmd = [sys.executable, osp.join(TOOLS, 'infer.py'), folder,
           '--recursive', '--model', model, '--out', out, '--overlay',
           '--areas', '--force', *MODES[mode], *extra]
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    chunks = []
    if tty:
        master, slave = pty.openpty()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=slave, env=env, start_new_session=True)
        os.close(slave)

        def drain():
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=drain, daemon=True)
    else:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)

        def drain():
            for data in iter(lambda: proc.stdout.read(65536), b''):
                chunks.append(data)

        reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    start = time.perf_counter()
    try:
        code = proc.wait(timeout)
        status = None   # decided from its summary line below
    except subprocess.TimeoutExpired:
        dump_stacks(proc.pid, hang_file)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = 'hang'
    seconds = time.perf_counter() - start
    reader.join(5)
    if tty:
        os.close(master)
    text = b''.join(chunks).decode(errors='replace').replace('\r', '\n')
    last = [ln for ln in text.splitlines() if ln.strip()][-3:]
    if status is None:
        # the folder's corrupt and empty files fail (exit status 1 says so);
        # a run ended well when it printed its summary
        summary = SUMMARY.search(text)
        status = 'ok' if summary and code in (0, 1) else f'failed ({code})'
    if status == 'hang':
        with open(hang_file, 'a') as f:
            f.write('### the run\'s output\n' + text)
    return dict(seconds=seconds, status=status, last=last)


def study(models, modes, terminals, runs, timeout, load, out, extra=(),
          frames=12):
    """Every model x mode x terminal ``runs`` times, interleaved; returns
    the rows of the closing table."""
    os.makedirs(out, exist_ok=True)
    folder = make_folder(osp.join(out, 'photos'), frames=frames)
    busy = start_load(load)
    rows = {}
    try:
        for r in range(runs):
            for model in models:
                for mode in modes:
                    for term in terminals:
                        key = (model, mode, term)
                        row = rows.setdefault(key, dict(
                            model=model, mode=mode, terminal=term, runs=0,
                            hangs=0, failed=0, seconds=[], dumps=[]))
                        hang = osp.join(out, f'hang-{len(rows)}-{r}.txt')
                        res = one_run(model, mode, term == 'tty', folder,
                                      osp.join(out, 'run'), timeout, hang,
                                      extra)
                        row['runs'] += 1
                        row['seconds'].append(res['seconds'])
                        if res['status'] == 'hang':
                            row['hangs'] += 1
                            row['dumps'].append(hang)
                        elif res['status'] != 'ok':
                            row['failed'] += 1
                            row.setdefault('last', res['last'])
                        print(f'[{r + 1}/{runs}] {osp.basename(model)} '
                              f'{mode} {term}: {res["status"]} '
                              f'{res["seconds"]:.1f} s', flush=True)
    finally:
        for p in busy:
            p.kill()
    shutil.rmtree(osp.join(out, 'run'), ignore_errors=True)
    return list(rows.values())


def table(rows, isa: str, load: int) -> str:
    lines = [f'tools/infer.py under a watchdog ({isa}, {os.cpu_count()} '
             f'CPUs, {load} busy-loop processes beside it)', '',
             '| model | mode | terminal | runs | hangs | failed | median s |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {osp.basename(r["model"])} | {r["mode"]} | '
                     f'{r["terminal"]} | {r["runs"]} | {r["hangs"]} | '
                     f'{r["failed"]} | '
                     f'{statistics.median(r["seconds"]):.1f} |')
    dumps = [d for r in rows for d in r['dumps']]
    if dumps:
        lines += ['', 'stacks of the hung runs: ' + ', '.join(dumps)]
    return '\n'.join(lines)


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', required=True,
                   help='Deployed model files (.onnx, .xml), or CONFIG.py '
                   'with --checkpoint.')
    p.add_argument('--checkpoint', help='The checkpoint of a config model.')
    p.add_argument('--modes', nargs='+', choices=list(MODES),
                   default=['throughput'], help='Modes to run (default: '
                   'throughput, the default mode with the pipeline).')
    p.add_argument('--terminals', nargs='+', choices=['tty', 'pipe'],
                   default=['tty', 'pipe'], help='The progress bar under a '
                   'pseudo-terminal, piped, or both (default).')
    p.add_argument('--runs', type=int, default=10,
                   help='Runs of each model x mode x terminal (default 10).')
    p.add_argument('--timeout', type=float, default=120,
                   help='Seconds before the watchdog calls a run hung '
                   '(default 120).')
    p.add_argument('--load', type=int, default=0,
                   help='Busy-loop processes beside the runs (default 0; '
                   'one per core for a loaded machine).')
    p.add_argument('--frames', type=int, default=12,
                   help='Frames of the video in the folder (default 12).')
    p.add_argument('--out', default='infer_stress',
                   help='Folder of the photos, the dumps and stress.json.')
    return p


def main(argv=None):
    sys.path.insert(0, TOOLS)
    from _cli import run

    def go(args):
        from repseg.ops.cpu import cpu_vector_isa
        if shutil.which('py-spy') is None:
            print('note: py-spy is not installed (pip install py-spy): hung '
                  'runs are killed without their stacks', file=sys.stderr)
        extra = ['--checkpoint', args.checkpoint] if args.checkpoint else []
        rows = study(args.models, args.modes, args.terminals, args.runs,
                     args.timeout, args.load, args.out, extra,
                     args.frames)
        text = table(rows, cpu_vector_isa(), args.load)
        with open(osp.join(args.out, 'stress.json'), 'w') as f:
            json.dump(rows, f, indent=2)
        print(text)
        return rows

    return run(build_parser(), go, argv)


if __name__ == '__main__':
    main()
