"""The run driver (repseg/infer/driver.py), without a model file: a
video's frame ranges cover each frame once, units are cut for the
executor, and a rerun of a video skips the frames an earlier run finished
(none segmented again) and still writes the whole overlay video."""
import cv2
import numpy as np

from repseg.infer.driver import frame_ranges, unit_sizes
from repseg.infer.engine import InferSettings, Summary, plan, run
from tests.infer import stuck


def _frames_read(ranges, every, source_frames):
    """The frames each range segments, reading from the video's start."""
    out = []
    for start, stop in ranges:
        out += [f for f in range(source_frames)
                if f % every == 0 and f >= start
                and (stop is None or f < stop)]
    return out


def test_frame_ranges_cover_every_frame_once():
    for source_frames in range(0, 30):
        for every in (1, 2, 3):
            frames = -(-source_frames // every)
            for parts in range(1, 6):
                ranges = frame_ranges(frames, every, parts)
                assert ranges[-1][1] is None   # the last runs to the end
                assert len(ranges) == max(1, min(parts, frames))
                got = _frames_read(ranges, every, source_frames)
                assert got == list(range(0, source_frames, every)), (
                    source_frames, every, parts, ranges)
    # about equal frames each
    assert frame_ranges(10, 1, 3) == [(0, 3), (3, 6), (6, None)]


def test_units_are_cut_for_the_executor():
    assert unit_sizes(300, 1, remote=False) == (1, None)   # this process
    assert unit_sizes(300, 2) == (38, 75)     # 4 units, 2 ranges per actor
    assert unit_sizes(10, 2) == (8, 3)        # at least 8 images
    assert unit_sizes(10000, 2) == (64, 2500)  # at most 64
    assert unit_sizes(300, 1) == (64, None)   # one actor: videos whole


def test_a_video_resumes_frame_by_frame(tmp_path):
    video = str(tmp_path / 'drive.avi')
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 5, (24, 16))
    for i in range(8):
        w.write(np.full((16, 24, 3), 0, np.uint8))
    w.release()
    settings = InferSettings(quiet=True, overlay=True, areas=True)
    out = tmp_path / 'out'
    sources, total = plan([video], settings)
    net = stuck.network()
    calls, segment = [], net.run
    net.run = lambda x: calls.append(1) or segment(x)
    first = list(run(net, sources, total, str(out), settings, Summary()))
    assert [r.status for r in first] == ['done'] * 8 and len(calls) == 8
    rows = (out / 'areas.csv').read_bytes()
    (out / 'labels' / 'drive' / '000003.png').unlink()
    (out / 'overlays' / 'drive.mp4').unlink()
    summary = Summary()
    again = list(run(net, sources, total, str(out), settings, summary))
    assert [r.key for r in again] == [f'drive/{i:06d}' for i in range(8)]
    assert (summary.done, summary.skipped) == (1, 7)
    assert len(calls) == 9   # only frame 3 segmented again
    assert (out / 'areas.csv').read_bytes() == rows
    cap = cv2.VideoCapture(str(out / 'overlays' / 'drive.mp4'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()
