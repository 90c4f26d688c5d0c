"""The service's bounds with networks that block, sleep or fail: 503 +
Retry-After at once past the queue bound, 504 past the time limit, 503
until ready, a 5xx logged with its request id (no traceback to the
client), and SIGTERM with requests in flight (each accepted one answered
200, exit 0). Every wait has a bound: nothing here can hang."""
import concurrent.futures
import logging
import os.path as osp
import signal
import subprocess
import sys
import threading
import time

import cv2
import httpx
import numpy as np

from tests.serve.helpers import fake_network, fake_service, free_port, \
    one_json_error, running, wait_for
from tests.utils import ROOT

IMAGE = cv2.imencode('.png', np.random.default_rng(0).integers(
    0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()


def post(base, timeout=30, **params):
    with httpx.Client(base_url=base, timeout=timeout) as c:
        return c.post('/segment', content=IMAGE, params=params,
                      headers={'Content-Type': 'image/png'})


def test_past_the_queue_bound_503_at_once_then_served():
    gate = threading.Event()
    net, calls = fake_network(requests=1, gate=gate)
    service = fake_service(net, queue=2)
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        with running(service) as base:
            held = [pool.submit(post, base) for _ in range(3)]
            wait_for(lambda: service.admission.admitted == 3, 30,
                     'three requests admitted')
            metrics = httpx.get(base + '/metrics').text
            assert 'repseg_serve_in_flight 3' in metrics
            assert 'repseg_serve_queue_depth 2' in metrics
            t0 = time.monotonic()
            # a planted unbounded queue admits it: it would wait for the
            # gate, past this client's time limit
            r = post(base, timeout=10)
            assert time.monotonic() - t0 < 5
            assert r.headers['retry-after'] == '1'
            assert 'limit' in one_json_error(r, 503)['error']
            assert calls['entered'] == 1   # the queue holds the others
            gate.set()
            assert [f.result(30).status_code for f in held] == [200] * 3
            wait_for(lambda: service.admission.admitted == 0, 10,
                     'the places freed')
            assert post(base).status_code == 200
            assert 'repseg_serve_images_failed_total{' not in \
                httpx.get(base + '/metrics').text
    finally:
        gate.set()
        pool.shutdown(wait=True)


def test_past_the_time_limit_504_and_the_place_is_held_until_the_work_ends(
        caplog):
    gate = threading.Event()
    net, calls = fake_network(requests=1, gate=gate)
    service = fake_service(net, timeout=0.5, queue=0)
    try:
        with running(service) as base:
            t0 = time.monotonic()
            with caplog.at_level(logging.INFO, logger='repseg.serve'):
                r = post(base)
            assert 0.4 < time.monotonic() - t0 < 10
            rid = one_json_error(r, 504)['request_id']
            assert 'time limit' in r.json()['error']
            assert any(rid in rec.getMessage() and '504' in rec.getMessage()
                       for rec in caplog.records)
            # its work still runs in the network: no place for another
            one_json_error(post(base), 503)
            gate.set()
            wait_for(lambda: service.admission.admitted == 0, 10,
                     'the place freed')
            assert post(base).status_code == 200
            assert 'repseg_serve_images_failed_total{status="504"} 1' in \
                httpx.get(base + '/metrics').text
    finally:
        gate.set()


def test_not_ready_until_loaded_and_warm():
    loaded = threading.Event()
    net, _ = fake_network()

    def load():
        assert loaded.wait(30)
        return net
    from repseg.serve.service import Service
    from repseg.serve.settings import ServeSettings
    service = Service(ServeSettings(), load)
    try:
        with running(service, wait_ready=False) as base:
            assert httpx.get(base + '/health').status_code == 200
            r = httpx.get(base + '/ready')
            assert r.status_code == 503 and r.json()['status'] == 'loading'
            r = post(base)
            assert r.headers['retry-after'] == '1'
            one_json_error(r, 503)
            one_json_error(httpx.get(base + '/model'), 503)
            loaded.set()
            assert service.ready.wait(30)
            assert httpx.get(base + '/ready').status_code == 200
            assert post(base).status_code == 200
    finally:
        loaded.set()


def test_a_failure_is_a_500_line_and_logged_with_its_request_id(caplog):
    net, _ = fake_network(fail=True)
    service = fake_service(net)
    with running(service) as base:
        with caplog.at_level(logging.ERROR, logger='repseg.serve'):
            r = post(base)
        body = one_json_error(r, 500)
        assert 'planted' not in r.text   # nothing of the inside
        rid = body['request_id']
        logged = [rec for rec in caplog.records if rid in rec.getMessage()]
        assert logged and logged[0].exc_info is not None
        assert httpx.get(base + '/health').status_code == 200
        assert service.admission.admitted == 0


def test_sigterm_finishes_the_accepted_requests_and_exits_0():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, osp.join(ROOT, 'tests', 'serve', 'slow_server.py'),
         str(port), '1.5'], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    base = f'http://127.0.0.1:{port}'
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        def ready():
            assert proc.poll() is None, proc.stdout.read()
            try:
                return httpx.get(base + '/ready').status_code == 200
            except httpx.TransportError:
                return False
        wait_for(ready, 60, 'the server ready')
        held = [pool.submit(post, base) for _ in range(4)]
        wait_for(lambda: 'repseg_serve_in_flight 4' in httpx.get(
            base + '/metrics').text, 30, 'four requests in flight')
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()

        def refused():
            try:
                httpx.get(base + '/health', timeout=2)
                return False
            except httpx.ConnectError:
                return True
        wait_for(refused, 10, 'new connections refused')
        assert not all(f.done() for f in held)   # refused while they run
        assert [f.result(30).status_code for f in held] == [200] * 4
        assert proc.wait(30) == 0
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pool.shutdown(wait=True)
    out = proc.stdout.read()
    assert 'Traceback' not in out, out
