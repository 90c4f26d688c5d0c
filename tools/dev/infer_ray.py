#!/usr/bin/env python
"""A developer's instrument: one process against Ray on this machine, the
same images and threads, start-up excluded. Each round runs, one after the
other in fresh processes, tools/infer.py in one process (--threads T) and
the same job on a local Ray cluster of T CPUs, once per actor size (2
actors of 1 thread, 1 of 2, ...), and with --shards two shards at once
(--shard 1/2, 2/2, T/2 threads each); it prints images/s (one process: after
loading the model; Ray: after the first actor began segmenting), wall
time, the load average before each run, the CPU's ISA, and where a Ray
run's time and CPU went (start-up: Ray until an actor's process runs,
repseg's import and model load, Ray's dispatch until the first unit; in
the steady part: the actors' time segmenting vs waiting between units,
the delay of a unit's results to the driver, and the CPU seconds of the
actors, the driver, the raylet, the GCS and Ray's other processes).

  python tools/dev/infer_ray.py FOLDER --model m_int8.xml --threads 2 \\
      --rounds 3 [--actor-threads 1 2]
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
ONE = re.compile(r'(\d+) done, .* in ([\d.]+) s: ([\d.]+) images/s')


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', nargs='+', help='Images, folders (searched '
                   'recursively) or videos: the job.')
    p.add_argument('--model', required=True, help='A deployed file.')
    p.add_argument('--threads', type=int, default=2,
                   help='Threads of the one process, CPUs of the Ray '
                   'cluster (default 2).')
    p.add_argument('--actor-threads', type=int, nargs='+', default=[1, 2],
                   help='Threads per Ray actor to measure (default: 1 2).')
    p.add_argument('--rounds', type=int, default=3,
                   help='Rounds; medians are reported (default 3).')
    p.add_argument('--shards', action='store_true',
                   help='Also two shards at once (--shard 1/2, 2/2), half '
                   'the threads each.')
    p.add_argument('--ray-worker', type=int, help=argparse.SUPPRESS)
    return p


class _CpuSampler:
    """CPU seconds of this process and of its descendants by kind (Ray's
    processes), sampled every 0.2 s."""

    def __init__(self):
        import psutil
        self.me = psutil.Process()
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _kind(cmdline: str) -> str:
        for kind, word in (('actors', 'MapWorker'), ('raylet', 'raylet'),
                           ('gcs', 'gcs_server')):
            if word in cmdline:
                return kind
        return 'other Ray'

    def _sample(self) -> dict:
        t = self.me.cpu_times()
        got = dict(driver=t.user + t.system)
        for p in self.me.children(recursive=True):
            try:
                t = p.cpu_times()
                kind = self._kind(' '.join(p.cmdline()))
            except Exception:  # noqa: B902  (a process gone meanwhile)
                continue
            got[kind] = got.get(kind, 0.0) + t.user + t.system
        return got

    def _run(self):
        while not self.stop.is_set():
            self.samples.append((time.time(), self._sample()))
            time.sleep(0.2)

    def between(self, a: float, b: float) -> dict:
        """CPU seconds by kind from time ``a`` to ``b`` (nearest samples;
        a process that ended meanwhile counts to its last sample)."""
        self.stop.set()
        self.thread.join()
        first = min(self.samples, key=lambda s: abs(s[0] - a))[1]
        last = min(self.samples, key=lambda s: abs(s[0] - b))[1]
        return {k: last.get(k, 0.0) - first.get(k, 0.0) for k in last}


def _profile(ex, end: float) -> dict:
    """Where a Ray run's time went (:attr:`RayExecutor.timeline`)."""
    units = ex.timeline
    actors = {}
    for pid, created, loaded, began, ended, images, _ in units:
        a = actors.setdefault(pid, dict(created=created, loaded=loaded,
                                        first=began, last=ended, busy=0.0,
                                        images=0))
        a['first'] = min(a['first'], began)
        a['last'] = max(a['last'], ended)
        a['busy'] += ended - began
        a['images'] += images
    span = sum(a['last'] - a['first'] for a in actors.values())
    return dict(
        actors=len(actors), units=len(units),
        to_actor_process=min(a['created'] for a in actors.values())
        - ex.started,
        actors_apart=max(a['first'] for a in actors.values())
        - min(a['first'] for a in actors.values()),
        import_and_load=statistics.mean(a['loaded'] - a['created']
                                        for a in actors.values()),
        to_first_unit=statistics.mean(a['first'] - a['loaded']
                                      for a in actors.values()),
        busy_share=sum(a['busy'] for a in actors.values()) / span,
        ms_per_image=1000 * sum(a['busy'] for a in actors.values())
        / max(1, sum(a['images'] for a in actors.values())),
        delivery_ms=1000 * statistics.mean(u[6] - u[4] for u in units),
        tail=end - max(a['last'] for a in actors.values()))


def ray_worker(args) -> None:
    """One Ray run in this process; prints its figures as JSON."""
    import functools

    import ray

    from repseg.infer.distributed import RayExecutor
    from repseg.infer.driver import Job, drive, plan
    from repseg.infer.job import InferSettings
    from repseg.infer.network import describe_network, load_network
    ray.init(num_cpus=args.threads, _node_ip_address='127.0.0.1',
             include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    s = InferSettings(threads=args.ray_worker, quiet=True, recursive=True,
                      force=True)
    sources, total = plan(args.inputs, s)
    out = tempfile.mkdtemp(prefix='repseg-ray-')
    ex = RayExecutor(functools.partial(load_network, args.model), s, out,
                     deployed=True)
    job = Job(sources, total, out, s, describe_network(args.model))
    cpu = _CpuSampler()
    for _ in drive(job, ex):
        pass
    end = time.time()
    shutil.rmtree(out, ignore_errors=True)
    steady = cpu.between(min(u[3] for u in ex.timeline), end)
    sm = job.summary
    print(json.dumps(dict(done=sm.done, wall=sm.seconds,
                          startup=sm.startup_seconds,
                          ips=sm.steady_images_per_s, cpu=steady,
                          profile=_profile(ex, end))))


def _run(cmd) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
               + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return proc.stdout


def _tool(args, out: str, *extra) -> list:
    """tools/infer.py on the job into ``out``."""
    return [sys.executable, osp.join(ROOT, 'tools', 'infer.py'),
            *args.inputs, '--recursive', '--model', args.model, '--out', out,
            '--quiet', *extra]


def _shards(args, out: str) -> dict:
    """Two shards at once (--shard 1/2, 2/2) of half the threads each:
    their images/s added, the longer one's seconds."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
               + os.environ.get('PYTHONPATH', ''))
    procs = [subprocess.Popen(
        _tool(args, out, '--shard', f'{k}/2', '--threads',
              str(max(1, args.threads // 2))), stdout=subprocess.PIPE,
        text=True, env=env, cwd=ROOT) for k in (1, 2)]
    figs = [ONE.search(p.communicate()[0]).groups() for p in procs]
    return dict(ips=sum(float(f[2]) for f in figs),
                wall=max(float(f[1]) for f in figs))


def one_round(args) -> dict:
    """Every configuration once; each figure with the load average (1
    minute) before it."""
    got = {}
    with tempfile.TemporaryDirectory(prefix='repseg-one-') as out:
        load = os.getloadavg()[0]
        text = _run(_tool(args, out, '--threads', str(args.threads),
                          '--force'))
        done, wall, ips = ONE.search(text).groups()
        got['one process'] = dict(ips=float(ips), wall=float(wall),
                                  load=load)
    if args.shards:
        with tempfile.TemporaryDirectory(prefix='repseg-shards-') as out:
            load = os.getloadavg()[0]
            got['two shards at once'] = dict(_shards(args, out), load=load)
    for t in args.actor_threads:
        load = os.getloadavg()[0]
        text = _run([sys.executable, osp.abspath(__file__), *args.inputs,
                     '--model', args.model, '--threads', str(args.threads),
                     '--ray-worker', str(t)])
        fig = json.loads(text.strip().splitlines()[-1])
        got[f'Ray, {args.threads // t} actor(s) x {t} thread(s)'] = dict(
            fig, load=load)
    return got


def table(rounds, isa: str, args) -> str:
    """The rounds' medians as markdown: speed, then the Ray profile."""
    keys = list(rounds[0])

    def med(k, f, sub=None):
        vals = [(r[k][sub] if sub else r[k]).get(f) for r in rounds]
        return statistics.median(v for v in vals if v is not None)

    base = med(keys[0], 'ips')
    lines = [f'CPU: {isa}; {args.threads} CPUs; medians of {len(rounds)} '
             'rounds, alternated', '',
             '| how | images/s (start-up excluded) | vs one process | wall '
             's | start-up s | load avg (1 min) before, per round |',
             '|---|---|---|---|---|---|']
    for k in keys:
        loads = ', '.join(f'{r[k]["load"]:.1f}' for r in rounds)
        start = f'{med(k, "startup"):.1f}' if 'startup' in rounds[0][k] \
            else '-'
        lines.append(f'| {k} | {med(k, "ips"):.1f} | '
                     f'{med(k, "ips") / base:.2f}x | {med(k, "wall"):.1f} | '
                     f'{start} | {loads} |')
    for k in [k for k in keys if 'profile' in rounds[0][k]]:
        p = rounds[0][k]['profile']
        lines += ['', f'{k} (medians):', '']
        lines += [f'- {name}: ' + fmt.format(med(k, field, 'profile'))
                  for name, field, fmt in _PROFILE if field in p]
        cpu = {c: med(k, c, 'cpu') for c in rounds[0][k]['cpu']}
        lines.append('- CPU s in the steady part: ' + ', '.join(
            f'{c} {v:.2f}' for c, v in sorted(cpu.items())))
    return '\n'.join(lines)


_PROFILE = (
    ('units to the first actor process (Ray)', 'to_actor_process',
     '{:.2f} s'),
    ('import repseg + load the model, per actor (repseg)', 'import_and_load',
     '{:.2f} s'),
    ('model loaded to first unit (Ray)', 'to_first_unit', '{:.2f} s'),
    ('the last actor began after the first (Ray: its process started '
     'later)', 'actors_apart', '{:.2f} s'),
    ('actors segmenting, share of their span (the rest: waiting for '
     'units)', 'busy_share', '{:.1%}'),
    ('actor time per image', 'ms_per_image', '{:.1f} ms'),
    ('a unit\'s results to the driver', 'delivery_ms', '{:.0f} ms'),
    ('last unit ended to the run\'s end (driver)', 'tail', '{:.2f} s'))


def main(argv=None):
    sys.path.insert(0, osp.dirname(HERE))
    from _cli import run

    def go(args):
        if args.ray_worker:
            return ray_worker(args)
        from repseg.ops.cpu import cpu_vector_isa
        rounds = []
        for r in range(args.rounds):
            rounds.append(one_round(args))
            print(f'round {r + 1}/{args.rounds}: ' + json.dumps(
                {k: round(v['ips'], 1) for k, v in rounds[-1].items()}),
                file=sys.stderr, flush=True)
        print(table(rounds, cpu_vector_isa(), args))

    run(build_parser(), go, argv)


if __name__ == '__main__':
    main()
