#!/usr/bin/env python
"""A developer's instrument: load ``repseg-serve`` over TCP with an
asynchronous HTTP client (httpx) in this process, the server in its own
(started here from MODEL, or ``--url`` of one already running).

For each number of concurrent clients (``--clients 1 4 16 64``) every
client posts the images of ``--images`` (a folder; default the synthetic
val set) one after the other for ``--seconds``: throughput, p50 / p95 /
p99 latency of the 200s, errors (anything but 200 and 503, transport
errors included), 503s (each client then waits as ``Retry-After``
says), the server's RSS (start; warm: after the first tenth of the
level; peak; end; and the growth from warm to end, which a server that
leaks shows over a long level) and this client's CPU share
(its CPU seconds over the wall time; past ~0.8 of a core the client,
not the server, may be the limit). A watchdog thread dumps this
process's stacks (and the server's, with py-spy when
installed) and ends the run when no request finished for ``--stall``
seconds. Figures carry the CPU's ISA.

  python tools/dev/serve_load.py m_int8.xml --clients 1 4 16 64 \\
      --seconds 20 --images data/cityscapes/leftImg8bit/val/frankfurt
  python tools/dev/serve_load.py --url http://127.0.0.1:8000 --clients 16
"""
import argparse
import asyncio
import collections
import faulthandler
import glob
import os
import os.path as osp
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, ROOT)


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('model', nargs='?', help='A model file to serve.')
    p.add_argument('--url', help='A running server instead of MODEL.')
    p.add_argument('--clients', type=int, nargs='+', default=[1, 4, 16, 64],
                   help='Numbers of concurrent clients, one row each '
                   '(default: 1 4 16 64).')
    p.add_argument('--seconds', type=float, default=20.0,
                   help='Seconds per number of clients (default 20).')
    p.add_argument('--images', default=osp.join(
        ROOT, 'data', 'synthetic_cityscapes', 'leftImg8bit', 'val'),
        help='A folder of images the clients send (default: the synthetic '
        'val images).')
    p.add_argument('--stall', type=float, default=60.0,
                   help='The watchdog: seconds without a finished request.')
    p.add_argument('--serve-args', nargs=argparse.REMAINDER, default=[],
                   help='Flags for the server (the rest of the line).')
    return p


def images(folder):
    files = sorted(f for f in glob.glob(osp.join(folder, '**', '*'),
                                        recursive=True)
                   if f.lower().endswith(('.png', '.jpg', '.jpeg')))
    if not files:
        sys.exit(f'error: no PNG or JPEG under {folder!r}: give --images')
    out = []
    for f in files:
        with open(f, 'rb') as fh:
            kind = 'image/png' if f.lower().endswith('.png') \
                else 'image/jpeg'
            out.append((fh.read(), kind))
    return out


def start_server(model, flags):
    """(process, base URL) of ``tools/serve.py MODEL`` on a free port,
    once ready."""
    import httpx
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, osp.join(ROOT, 'tools', 'serve.py'), model,
         '--port', str(port), *flags], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f'error: the server ended ({proc.returncode})')
        try:
            if httpx.get(url + '/ready').status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit('error: the server was not ready within 300 s')


class Watchdog:
    """Dumps stacks and ends the process when :meth:`tick` is not called
    for ``seconds``."""

    def __init__(self, seconds, server_pid=None):
        self.seconds, self.server_pid = seconds, server_pid
        self.last = time.monotonic()
        self.stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def tick(self):
        self.last = time.monotonic()

    def _watch(self):
        while not self.stop.wait(1):
            if time.monotonic() - self.last > self.seconds:
                sys.stderr.write(f'watchdog: no request finished in '
                                 f'{self.seconds:g} s; stacks:\n')
                faulthandler.dump_traceback(all_threads=True)
                if self.server_pid and shutil.which('py-spy'):
                    subprocess.run(['py-spy', 'dump', '--pid',
                                    str(self.server_pid)], timeout=60)
                os._exit(3)


async def _client(client, url, pool, until, out, errors, dog, k):
    i = k
    while time.monotonic() < until:
        data, kind = pool[i % len(pool)]
        i += 1
        t0 = time.monotonic()
        try:
            r = await client.post(url + '/segment', content=data,
                                  headers={'Content-Type': kind})
            status = r.status_code
            if status not in (200, 503):
                errors.append(f'{status} {r.text[:200]}')
        except Exception as e:  # noqa: B902  (a transport error is an error)
            status = 0
            errors.append(f'{type(e).__name__}: {e}')
        out.append((status, time.monotonic() - t0))
        dog.tick()
        if status == 503:   # as a client that honours Retry-After
            await asyncio.sleep(float(r.headers.get('retry-after', 1)))


async def level(url, pool, clients, seconds, dog):
    import httpx
    out, errors = [], []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        until = time.monotonic() + seconds
        t0 = time.monotonic()
        await asyncio.gather(*(_client(client, url, pool, until, out, errors,
                                       dog, k) for k in range(clients)))
        return out, errors, time.monotonic() - t0


def rss_mb(pid):
    if pid is None:   # a server of --url: not this machine's to measure
        return float('nan')
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: B902  (no psutil, or the process ended)
        return float('nan')


def pct(values, q):
    if not values:
        return float('nan')
    return statistics.quantiles(values, n=100, method='inclusive')[q - 1] \
        if len(values) > 1 else values[0]


def run_levels(args, url, pid, pool):
    from repseg.ops.cpu import cpu_vector_isa
    print(f'CPU ISA: {cpu_vector_isa()}, {os.cpu_count()} CPUs; '
          f'{len(pool)} images; {args.seconds:g} s per level')
    print('| clients | img/s | p50 ms | p95 ms | p99 ms | 200 | 503 | '
          'errors | server RSS MB (start/warm/peak/end, growth) | '
          'client CPU |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    dog = Watchdog(args.stall, pid)
    for n in args.clients:
        start, peak, warm = rss_mb(pid), 0.0, None
        sampler = threading.Event()
        began = time.monotonic()

        def sample():
            nonlocal peak, warm
            while not sampler.wait(0.5):
                rss = rss_mb(pid)
                peak = max(peak, rss)
                if warm is None and \
                        time.monotonic() - began >= args.seconds / 10:
                    warm = rss
        threading.Thread(target=sample, daemon=True).start()
        cpu0 = time.process_time()
        out, errors, wall = asyncio.run(level(url, pool, n, args.seconds,
                                              dog))
        cpu = (time.process_time() - cpu0) / wall
        sampler.set()
        ok = [t * 1000 for s, t in out if s == 200]
        busy = sum(1 for s, _ in out if s == 503)
        err = len(out) - len(ok) - busy
        end = rss_mb(pid)
        warm = end if warm is None else warm
        memory = 'n/a' if pid is None else (
            f'{start:.0f}/{warm:.0f}/{max(peak, end):.0f}/{end:.0f}, '
            f'{100 * (end - warm) / warm:+.1f}%')
        print(f'| {n} | {len(ok) / wall:.1f} | {pct(ok, 50):.1f} | '
              f'{pct(ok, 95):.1f} | {pct(ok, 99):.1f} | {len(ok)} | {busy} '
              f'| {err} | {memory} | '
              f'{cpu:.2f} |', flush=True)
        for kind, count in collections.Counter(errors).most_common(3):
            print(f'  error x{count}: {kind}', flush=True)
    dog.stop.set()


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not (args.model or args.url):
        sys.exit('error: give MODEL or --url')
    pool = images(args.images)
    proc = None
    if args.url:
        url, pid = args.url.rstrip('/'), None
    else:
        proc, url = start_server(args.model, args.serve_args)
        pid = proc.pid
    try:
        run_levels(args, url, pid, pool)
    finally:
        if proc is not None:
            proc.terminate()
            code = proc.wait(60)
            print(f'server exit status after SIGTERM: {code}')


if __name__ == '__main__':
    main()
