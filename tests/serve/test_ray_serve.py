"""repseg-serve --ray on a local Ray cluster (127.0.0.1, 2 CPUs): two
replicas of 1 CPU each of the demo model (a random-weight ONNX file)
answer the label maps of the one-process service byte for byte, without
the training stack in their processes; a replica killed with SIGKILL under
load is replaced by Serve while the other answers (requests in flight on
it may get a 5xx, none hangs: every request has a client time limit and
the scenario a watchdog); a wrong combination of flags is one error line.
Ray says nothing of deprecation (its deprecation warnings are errors
here). Ray is in the test extras: where it is missing this fails, it does
not skip."""
import glob
import os
import os.path as osp
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import pytest

import ray
from ray import serve
from repseg.serve.cli import main
from repseg.serve.ray_serve import APP_NAME, deploy_on_ray
from repseg.serve.server import model_service
from repseg.serve.settings import ServeSettings
from tests.serve.helpers import free_port, one_json_error, running
from tests.utils import random_onnx

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        'error::ray.util.annotations.RayDeprecationWarning')
]
#: seconds the service has to answer 200 again after a replica is killed
#: (and Serve to replace it)
BACK_WITHIN = 120
#: a client's time limit per request (above Serve's own: timeout + 10)
CLIENT_TIMEOUT = 45
TIMEOUT = 20.0


@pytest.fixture(scope='module')
def model(synthetic_root, tmp_path_factory):
    return random_onnx(synthetic_root, tmp_path_factory.mktemp('rserve'))[2]


@pytest.fixture(scope='module')
def images(synthetic_root, tmp_path_factory):
    """name -> (body, content type): the val images, and a JPEG of
    another size (the resize path)."""
    files = sorted(glob.glob(osp.join(synthetic_root, 'leftImg8bit', 'val',
                                      '*', '*.png')))
    out = {f'v{i}': (_read(f), 'image/png') for i, f in enumerate(files)}
    jpg = cv2.imencode('.jpg', cv2.resize(cv2.imread(files[0]),
                                          (300, 170)))[1].tobytes()
    out['jpg'] = (jpg, 'image/jpeg')
    return out


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _post(client, body, kind='image/png'):
    return client.post('/segment', content=body,
                       headers={'Content-Type': kind})


@pytest.fixture(scope='module')
def reference(model, images):
    """name -> the label PNG the one-process service answers."""
    service = model_service(model, settings=ServeSettings(threads=1))
    with running(service) as base, httpx.Client(base_url=base,
                                                timeout=60) as c:
        answers = {k: _post(c, *v) for k, v in images.items()}
    assert {r.status_code for r in answers.values()} == {200}
    return {k: r.content for k, r in answers.items()}


@pytest.fixture(scope='module')
def ray_url(model):
    """The app on Ray Serve: two replicas of 1 CPU on a local 2-CPU
    cluster; Serve and the cluster shut down at the end."""
    ray.init(num_cpus=2, _node_ip_address='127.0.0.1',
             include_dashboard=False, log_to_driver=False)
    try:
        yield deploy_on_ray(model, settings=ServeSettings(
            ray=True, replicas=2, threads=1, port=free_port(),
            timeout=TIMEOUT))
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_pids():
    """The process ids of the replicas alive (the actor table of Ray's
    control store: its state API needs the dashboard, off here)."""
    from ray._private import state
    return sorted(a['Pid'] for a in state.actors(
        actor_state_name='ALIVE').values()
        if a['ActorClassName'].endswith(f':{APP_NAME}:RepsegReplica'))


def _replicas_running() -> int:
    app = serve.status().applications[APP_NAME]
    return app.deployments['RepsegReplica'].replica_states.get('RUNNING', 0)


def within(seconds, fn, what):
    """``fn()`` under a watchdog: a failure naming ``what`` and showing
    where it is stuck if it has not returned within ``seconds``."""
    box = {}

    def run():
        try:
            box['value'] = fn()
        except BaseException as e:  # noqa: B902  (raised in the test)
            box['error'] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        stack = ''.join(traceback.format_stack(
            sys._current_frames()[t.ident]))
        pytest.fail(f'{what} did not end within {seconds} s:\n{stack}')
    if 'error' in box:
        raise box['error']
    return box.get('value')


def test_replicas_answer_the_labels_of_one_process(ray_url, images,
                                                   reference):
    pids = replica_pids()
    assert len(pids) == 2 and _replicas_running() == 2
    for pid in pids:   # a deployed file: no training stack in a replica
        with open(f'/proc/{pid}/maps') as f:
            maps = f.read()
        assert 'onnxruntime' in maps and 'libtorch' not in maps, pid
    names = sorted(images) * 3
    with httpx.Client(base_url=ray_url, timeout=CLIENT_TIMEOUT) as c, \
            ThreadPoolExecutor(4) as pool:   # both replicas busy
        answers = list(pool.map(lambda k: _post(c, *images[k]), names))
        for name, r in zip(names, answers):
            assert r.status_code == 200, (name, r.text[:300])
            assert r.headers['content-type'] == 'image/png'
            assert r.content == reference[name], name
        assert c.get('/ready').json() == {'status': 'ready'}
        assert c.get('/model').json()['threads'] == 1
        # a refusal is the service's own: one JSON line, one request id
        one_json_error(_post(c, b''), 400)


def test_a_killed_replica_is_replaced_and_no_request_hangs(
        ray_url, images, reference):
    body, kind = images['v0']
    want = reference['v0']
    log, stop = [], threading.Event()

    def client():
        with httpx.Client(base_url=ray_url, timeout=CLIENT_TIMEOUT) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = _post(c, body, kind)
                    got = r.status_code, r.content == want
                except httpx.HTTPError as e:   # a timeout: a hang
                    got = type(e).__name__, False
                log.append((t0, time.monotonic()) + got)

    def answered(after, status=200):
        return [e for e in log if e[0] > after and e[2] == status]

    def scenario():
        threads = [threading.Thread(target=client, daemon=True)
                   for _ in range(3)]
        for t in threads:
            t.start()
        try:
            start = time.monotonic()
            while len(answered(start)) < 6:
                assert time.monotonic() < start + 60, log[-5:]
                time.sleep(0.05)
            victim = replica_pids()[0]
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            while not answered(killed):
                assert time.monotonic() < killed + BACK_WITHIN, \
                    f'no 200 within {BACK_WITHIN} s of the kill'
                time.sleep(0.05)
            back = time.monotonic()
            while True:   # Serve replaces the replica
                pids = replica_pids()
                if victim not in pids and len(pids) == 2 \
                        and _replicas_running() == 2:
                    break
                assert time.monotonic() < killed + BACK_WITHIN, \
                    f'the replica was not replaced within {BACK_WITHIN} s'
                time.sleep(0.2)
            replaced = time.monotonic()
            n = len(answered(replaced))
            while len(answered(replaced)) < n + 6:   # load on both
                assert time.monotonic() < replaced + 60, log[-5:]
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(CLIENT_TIMEOUT + 5)
            assert not any(t.is_alive() for t in threads), 'a client hung'
        return killed, back, replaced

    killed, back, replaced = within(
        2 * BACK_WITHIN + CLIENT_TIMEOUT + 30, scenario,
        'the kill-under-load scenario')
    hung = [e for e in log if not isinstance(e[2], int)]
    assert not hung, hung[:5]   # every request was answered
    assert {e[2] for e in log} <= {200} | set(range(500, 600)), log
    assert all(e[3] for e in log if e[2] == 200)   # the same labels
    late = [e for e in log if e[0] > replaced and e[2] != 200]
    assert not late, late[:5]   # once replaced, every answer is 200
    failed = [e for e in log if e[2] != 200]
    print(f'\nkill under load: {len(log)} requests, {len(failed)} 5xx '
          f'(all started before the replacement), 200 again after '
          f'{back - killed:.2f} s, replaced after {replaced - killed:.1f} s')


@pytest.fixture
def never_served(monkeypatch):
    """Serving (one process or Ray Serve) fails the test at once instead
    of blocking it (or replacing the module's app): a flag combination
    that should be refused and is not."""
    import repseg.serve.server

    def refuse(*args, **kwargs):
        raise AssertionError('served, not refused')
    monkeypatch.setattr(repseg.serve.server, 'run_service', refuse)
    monkeypatch.setattr(serve, 'run', refuse)


@pytest.mark.parametrize('flags, words', [
    (['--replicas', '2'], '--replicas 2 is for serving on Ray Serve: add '
     '--ray (or --ray-address), or leave it out'),
    (['--ray', '--replicas', '0'], '--replicas 0: give 1 or more'),
])
def test_bad_flags_are_one_error_line(ray_url, model, never_served, flags,
                                      words):
    with pytest.raises(SystemExit) as e:
        main([model, *flags])
    assert str(e.value) == f'error: {words}'


def test_more_cpus_than_the_cluster_has_is_one_error_line(
        ray_url, model, never_served):
    with pytest.raises(SystemExit) as e:
        main([model, '--ray', '--replicas', '3'])
    assert str(e.value) == (
        'error: --replicas 3 with --threads 1 each needs 3 CPUs, but the '
        'Ray cluster has 2: give fewer replicas or threads, or join a '
        'larger cluster (--ray-address)')
    with httpx.Client(base_url=ray_url, timeout=CLIENT_TIMEOUT) as c:
        assert c.get('/ready').status_code == 200   # the app untouched
    assert len(replica_pids()) == 2


def test_without_ray_serve_one_line_names_the_extra(model, monkeypatch,
                                                    never_served):
    monkeypatch.delattr(ray, 'serve')
    monkeypatch.setitem(sys.modules, 'ray.serve', None)
    with pytest.raises(SystemExit) as e:
        main([model, '--ray-address', '127.0.0.1:1'])
    text = str(e.value)
    assert text.startswith('error: --ray needs Ray Serve') and \
        text.endswith('pip install "repseg[ray,serve]"') and \
        '\n' not in text, text
