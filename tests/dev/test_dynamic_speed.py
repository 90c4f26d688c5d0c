"""tools/dev/dynamic_speed.py: the table the dynamic-export default was
chosen from (one row per threads x runtime x precision, each a fixed and a
dynamic file of one model timed side by side), and its one-line refusal of
a size it cannot read."""
import re

import pytest

from repseg.errors import UsageError
from tests.utils import DEMO_CONFIG, DEV_TOOLS  # noqa: F401 (tools/dev)
import dynamic_speed  # noqa: E402


def test_the_table_has_a_fixed_and_a_dynamic_figure_per_cell(tmp_path):
    args = dynamic_speed.build_parser().parse_args(
        [f'{DEMO_CONFIG}:64x96', '--backend', 'onnxruntime', '--threads',
         '1', '--rounds', '1', '--iters', '1', '--work-dir',
         str(tmp_path)])
    lines = dynamic_speed.study(args)
    assert lines[0].startswith('CPU: ')
    rows = [line for line in lines
            if re.match(r'\| pspnet\S* \d+x\d+ \|', line)]
    assert [r.split(' | ')[1:4] for r in rows] == [
        ['1', 'ONNX Runtime', 'fp32'], ['1', 'ONNX Runtime', 'int8']]
    for r in rows:
        fixed, dynamic, ratio = (float(v.rstrip('x')) for v in
                                 r.strip('| ').split(' | ')[4:])
        # The times are printed to 0.1 ms and the ratio to 0.01, each
        # rounded from the unrounded figures: the ratio lies within what
        # the printed times allow, plus its own rounding.
        low = (fixed - 0.05) / (dynamic + 0.05) - 0.005
        high = (fixed + 0.05) / (dynamic - 0.05) + 0.005
        assert low <= ratio <= high, (fixed, dynamic, ratio)
    assert (tmp_path / 'pspnet_repvgg_a0_synthetic_64x96'
            / 'dynamic_onnxruntime_int8.onnx').exists()


def test_a_size_it_cannot_read_is_one_line():
    args = dynamic_speed.build_parser().parse_args([f'{DEMO_CONFIG}:64'])
    with pytest.raises(UsageError, match='give CONFIG:HxW'):
        dynamic_speed.study(args)
