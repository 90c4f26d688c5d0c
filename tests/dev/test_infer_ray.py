"""tools/dev/infer_ray.py: where a Ray run's time went, from the times
its actors report, and the table of alternated rounds."""
import types

from tests.utils import DEV_TOOLS  # noqa: F401  (puts tools/dev on sys.path)
import infer_ray  # noqa: E402


def _executor():
    """Two actors (created 1 s after the units went out, loaded 0.5 s
    later), each two units of 10 images of 1 s, 0.5 s apart."""
    units = []
    for pid in (1, 2):
        for began in (1.6, 3.1):
            units.append((pid, 1.0, 1.5, began, began + 1.0, 10,
                          began + 1.2))
    return types.SimpleNamespace(started=0.0, timeline=units)


def test_the_profile_splits_start_up_and_steady_time():
    p = infer_ray._profile(_executor(), end=4.2)
    assert p['actors'] == 2 and p['units'] == 4
    assert p['to_actor_process'] == 1.0 and p['import_and_load'] == 0.5
    assert abs(p['to_first_unit'] - 0.1) < 1e-9
    assert p['actors_apart'] == 0.0
    assert abs(p['busy_share'] - 2 / 2.5) < 1e-9   # 0.5 s between units
    assert abs(p['ms_per_image'] - 100) < 1e-9
    assert abs(p['delivery_ms'] - 200) < 1e-6
    assert abs(p['tail'] - 0.1) < 1e-9


def test_the_table_compares_each_way_with_one_process():
    args = types.SimpleNamespace(threads=2)
    ray = dict(ips=40.0, wall=9.0, startup=4.0, load=1.0, cpu=dict(
        actors=4.0, raylet=0.1), profile=infer_ray._profile(_executor(),
                                                            4.2))
    rounds = [{'one process': dict(ips=50.0, wall=6.0, load=1.5),
               'Ray, 2 actor(s) x 1 thread(s)': ray}] * 2
    text = infer_ray.table(rounds, 'AVX2', args)
    assert 'CPU: AVX2; 2 CPUs; medians of 2 rounds' in text
    assert '| Ray, 2 actor(s) x 1 thread(s) | 40.0 | 0.80x | 9.0 | 4.0 | ' \
        '1.0, 1.0 |' in text
    assert 'actor time per image: 100.0 ms' in text
    assert 'CPU s in the steady part: actors 4.00, raylet 0.10' in text
