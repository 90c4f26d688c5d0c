"""tools/benchmark.py on tiny shapes: report schema, fusion assertion,
checkpoint errors, the --fast layout and the PNG."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from repseg import reparameterize_model
from repseg.apis import UsageError
from repseg.benchmark import build_for_benchmark, lineup
from repseg.deploy.build import check_input_size
from repseg.errors import NotFusedError as BenchmarkError
from repseg.reparam import assert_fused
from repseg.ops import NNPACKConv2d

from tests.utils import CONFIG_DIR, DEMO_CONFIG, ROOT

TOOL = osp.join(ROOT, 'tools', 'benchmark.py')


def test_tool_writes_json_table_and_png(tmp_path):
    out = tmp_path / 'bench'
    proc = subprocess.run(
        [sys.executable, TOOL, DEMO_CONFIG, '--shape', '65', '65',
         '--warmup', '1', '--iters', '2', '--repeat', '2',
         '--compare-unfused', '--compare-conv-impl', '--profile', '--dtype',
         'fp32', 'bf16', '--out', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '| model | dilation | img/s |' in proc.stdout
    result = json.loads((out / 'benchmark.json').read_text())
    env = result['env']
    for key in ('device', 'torch', 'mmcv', 'mmseg', 'threads', 'batch',
                'dtype', 'shape', 'warmup', 'iters', 'repeat',
                'cudnn_benchmark'):
        assert key in env, key
    assert env['shape'] == [65, 65] and env['batch'] == 1
    assert env['conv_impl'] == 'nnpack'
    # one record per model, one entry per timed form (runtime, precision)
    (row, ) = result['rows']
    runs = row['runs']
    assert set(runs) == {'fused', 'unfused', 'native', 'bf16'}
    fused, unfused, native, bf16 = (runs[k] for k in (
        'fused', 'unfused', 'native', 'bf16'))
    assert (fused['runtime'], fused['precision'], fused['conv_impl']) == (
        'pytorch', 'fp32', 'nnpack')
    assert (native['conv_impl'], bf16['precision']) == ('native', 'bf16')
    for run in runs.values():
        assert run['img_per_s'] > 0 and run['latency_ms'] > 0
    assert row['params_m'] > 0 and row['gflops'] > 0
    # A0 fused: every conv but the 3 stride-2 stage heads, the PSP 1x1s and
    # the classifier is a 3x3 stride-1 conv on NNPACK
    assert 0 < row['nnpack_convs'] < row['convs']
    # ... but at 65x65 no conv passes the size policy: none ran NNPACK
    assert fused['nnpack_calls'] == 0 < fused['native_conv_calls']
    assert native['relative_diff'] <= 1e-4
    assert 'nnpack/native' in proc.stdout
    assert fused['latency_min_ms'] <= fused['latency_ms']
    assert fused['peak_mem_mib'] is not None
    assert fused['peak_mem_mib'] > 0      # a forward allocates
    assert unfused['relative_diff'] <= 1e-4
    # every printed ratio is the ratio of the timings in the JSON, in the
    # right direction (speed-up = unfused time / fused time)
    assert row['fused_speedup'] == pytest.approx(
        unfused['latency_ms'] / fused['latency_ms'], rel=1e-9)
    assert row['conv_impl_speedup'] == pytest.approx(
        native['latency_ms'] / fused['latency_ms'], rel=1e-9)
    line = [ln for ln in proc.stdout.splitlines()
            if ln.startswith(f"| {row['name']} |")][0]
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert f"{row['fused_speedup']:.2f}x" == cells[9]
    assert f"{row['conv_impl_speedup']:.2f}x" == cells[12]
    # --dtype fp32 bf16: a bf16 copy timed side by side, compared with fp32
    assert bf16['vs_pytorch'] == pytest.approx(
        fused['latency_ms'] / bf16['latency_ms'], rel=1e-9)
    assert f"{bf16['vs_pytorch']:.2f}x" == cells[14]
    assert 0 < bf16['max_abs_diff'] < 0.05 * bf16['max_abs_logit']
    assert bf16['argmax_agreement'] > 0.9
    assert f"{100 * bf16['argmax_agreement']:.2f}" == cells[15]
    png = (out / 'benchmark.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
    # --profile: time by part and layer kind of every timed form
    assert '| model | form | total ms | backbone ms |' in proc.stdout
    fused, unfused, native, bf16 = (
        runs[k]['profile'] for k in ('fused', 'unfused', 'native', 'bf16'))
    for prof in (fused, unfused, native, bf16):
        assert prof['total_ms'] > 0
        assert set(prof['parts']) == {'backbone', 'decode_head', 'rest'}
        assert prof['parts']['backbone'] > 0
    # fused: BNs folded, 3x3 stride-1 convs on NNPACK; unfused: BNs, 1x1
    # branches; native: PyTorch's convs
    assert 'batchnorm' not in fused['kinds']
    assert fused['kinds']['conv3x3 [nnpack]'] > 0
    assert unfused['kinds']['batchnorm'] > 0
    assert unfused['kinds']['conv1x1'] > 0
    assert native['kinds']['conv3x3'] > 0
    assert not any('[nnpack]' in k for k in native['kinds'])
    png = (out / 'profile.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


def test_assert_fused_fires_on_unfused_model():
    model = build_for_benchmark(DEMO_CONFIG)
    with pytest.raises(BenchmarkError, match='not fully fused'):
        assert_fused(model)
    assert_fused(reparameterize_model(model))


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(UsageError, match='does not exist'):
        build_for_benchmark(DEMO_CONFIG, str(tmp_path / 'none.pth'))
    proc = subprocess.run(
        [sys.executable, TOOL, DEMO_CONFIG, str(tmp_path / 'none.pth'),
         '--shape', '65'], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert 'does not exist' in proc.stderr and 'random weights' in \
        proc.stderr
    assert 'Traceback' not in proc.stderr


def _dilated_convs(model):
    return sum(1 for m in model.backbone.modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
               and m.dilation[0] > 1)


def test_fast_changes_the_dilation_layout():
    cfg = osp.join(CONFIG_DIR, 'pspnet_repvgg_b1g2.py')
    full = build_for_benchmark(cfg)
    fast = build_for_benchmark(cfg, fast=True)
    assert full.backbone.dilation_mode == 'full'
    assert fast.backbone.dilation_mode == 'fast'
    # B1g2: the last two stages hold 16 + 1 layers, 'fast' dilates 5
    assert _dilated_convs(full) == 17
    assert _dilated_convs(fast) == 5
    assert fast.backbone.output_stride == full.backbone.output_stride == 8


def test_lineup():
    names = [r['name'] for r in lineup()]
    assert set(names) == {'RepVGG-B1g2', 'RepVGG-B1g2-fast', 'RepVGG-B2',
                          'RepVGG-B2-fast', 'ResNet-50-D8', 'ResNet-101-D8'}
    fast = {r['name'] for r in lineup(fast=True)}
    assert fast == {'RepVGG-B1g2-fast', 'RepVGG-B2-fast', 'ResNet-50-D8',
                    'ResNet-101-D8'}
    for r in lineup():
        assert osp.isfile(r['config'])
        if r['baseline']:
            assert r['baseline'] in names
    one = lineup(True, 'configs/pspnet_repvgg_a0.py', 'a.pth', {'k': 1})
    assert one == [dict(name='pspnet_repvgg_a0-fast',
                        config='configs/pspnet_repvgg_a0.py',
                        checkpoint='a.pth', cfg_options={'k': 1})]


def test_lineup_configs_are_found_on_the_search_path(
        tmp_path, monkeypatch):
    """Table 8's configs come from $REPSEG_CONFIGS, then ./configs (never
    from a path computed from the package's own file: configs/ is not
    installed); in neither, one UsageError says what to do."""
    import os
    import shutil

    from repseg.benchmark import CONFIGS_ENV, find_config
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIGS_ENV, raising=False)
    with pytest.raises(UsageError, match=(
            r"the line-up config 'pspnet_repvgg_b1g2_fast.py' is in none of "
            rf"the folders searched \({tmp_path}/configs\): run from a "
            r'repseg checkout .*, set REPSEG_CONFIGS to the folder of the '
            'configs, or name the configs to time')):
        lineup()
    monkeypatch.setenv(CONFIGS_ENV, os.pathsep.join(
        [str(tmp_path / 'none'), CONFIG_DIR]))
    assert [r['config'] for r in lineup(fast=True)] == [
        osp.join(CONFIG_DIR, c) for c in (
            'pspnet_repvgg_b1g2_fast.py', 'pspnet_r50-d8.py',
            'pspnet_repvgg_b2_fast.py', 'pspnet_r101-d8.py')]
    # the current folder's configs/ after the variable's folders
    (tmp_path / 'configs').mkdir()
    shutil.copy(osp.join(CONFIG_DIR, 'pspnet_r50-d8.py'),
                tmp_path / 'configs')
    assert find_config('pspnet_r50-d8.py') == osp.join(CONFIG_DIR,
                                                       'pspnet_r50-d8.py')
    monkeypatch.delenv(CONFIGS_ENV)
    assert find_config('pspnet_r50-d8.py') == str(
        tmp_path / 'configs' / 'pspnet_r50-d8.py')


def test_each_config_is_loaded_once(monkeypatch):
    """The line-up's ResNet check, the default input size and the build
    read one loaded config per model (they loaded it three times)."""
    from repseg.benchmark import build, configs
    from repseg.benchmark.configs import default_input_size, load_entries
    loaded = []

    def counted(path, **kwargs):
        loaded.append(osp.basename(path))
        return real(path, **kwargs)

    real = configs.load_cfg
    monkeypatch.setattr(configs, 'load_cfg', counted)
    monkeypatch.setattr(build, 'load_cfg', counted)
    # the size from the configs themselves, not their (absent) test images
    monkeypatch.setattr(configs, 'config_input_size', lambda cfg: (48, 96))
    r50 = osp.join(CONFIG_DIR, 'pspnet_r50-d8.py')
    rows = lineup(False, [DEMO_CONFIG, r50])
    assert rows[0]['baseline'] == 'pspnet_r50-d8'
    load_entries(rows)
    assert default_input_size(rows) == (48, 96)
    rows[0]['cfg'].model.backbone.dilation_mode = 'full'
    model = build.build_for_benchmark(rows[0]['cfg'], fast=True,
                                      logger=lambda m: None)
    assert model.backbone.dilation_mode == 'fast'   # the loaded config kept
    assert rows[0]['cfg'].model.backbone.dilation_mode == 'full'
    assert sorted(loaded) == sorted([osp.basename(DEMO_CONFIG),
                                     'pspnet_r50-d8.py'])


def test_several_configs_pair_with_their_checkpoints():
    """CONFIG [CHECKPOINT] ...: each .py starts a model, what follows is its
    checkpoint; the one ResNet among several is every other row's
    baseline."""
    from repseg.benchmark import pair_models
    d2se, b2, r101 = (osp.join(CONFIG_DIR, f'pspnet_{n}.py')
                      for n in ('repvgg_d2se', 'repvgg_b2', 'r101-d8'))
    assert pair_models([d2se, 'a.pth', b2, r101, 'c.pth']) == [
        (d2se, 'a.pth'), (b2, None), (r101, 'c.pth')]
    rows = lineup(False, [d2se, 'a.pth', b2, r101])
    assert [(r['name'], r['checkpoint'], r.get('baseline'))
            for r in rows] == [
        ('pspnet_repvgg_d2se', 'a.pth', 'pspnet_r101-d8'),
        ('pspnet_repvgg_b2', None, 'pspnet_r101-d8'),
        ('pspnet_r101-d8', None, None)]
    # two ResNets: no single baseline, no ratio
    rows = lineup(False, [b2, r101, osp.join(CONFIG_DIR, 'pspnet_r50-d8.py')])
    assert all('baseline' not in r for r in rows)
    with pytest.raises(UsageError, match="comes before any config"):
        pair_models(['a.pth', b2])
    with pytest.raises(UsageError, match='has two checkpoints'):
        pair_models([b2, 'a.pth', 'b.pth'])
    with pytest.raises(UsageError, match='given twice'):
        lineup(False, [b2, b2])


def test_several_configs_through_the_tool(tmp_path):
    """Two configs, one run: both rows timed in the same interleaved rounds,
    the RepVGG row compared with the ResNet one."""
    out = tmp_path / 'bench'
    r50 = osp.join(CONFIG_DIR, 'pspnet_r50-d8.py')
    proc = subprocess.run(
        [sys.executable, TOOL, DEMO_CONFIG, r50, '--shape', '64',
         '--warmup', '0', '--iters', '1', '--repeat', '1', '--no-flops',
         '--out', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / 'benchmark.json').read_text())['rows']
    assert [r['name'] for r in rows] == ['pspnet_repvgg_a0_synthetic',
                                         'pspnet_r50-d8']
    a0, r50 = rows
    assert a0['baseline'] == 'pspnet_r50-d8' and r50['baseline'] is None
    assert (a0['backbone'], r50['backbone']) == ('RepVGG', 'ResNetV1c')
    assert a0['speed_vs_baseline'] == pytest.approx(
        r50['runs']['fused']['latency_ms'] / a0['runs']['fused']['latency_ms'],
        rel=1e-6)
    assert 'x pspnet_r50-d8 |' in proc.stdout


@pytest.mark.parametrize('shape', [(16, 16), (713, 8), (1, 2, 3)])
def test_unsupported_shapes(shape):
    with pytest.raises(UsageError, match='not supported'):
        check_input_size(shape)
    assert check_input_size((713, )) == (713, 713)


def test_conv_impl_choices(monkeypatch):
    from repseg.benchmark import run_benchmark
    entry = [dict(name='a0', config=DEMO_CONFIG)]
    with pytest.raises(TypeError, match="unexpected keyword .*'shape'"):
        run_benchmark(entry, shape=(64, 64))   # removed: input_size
    with pytest.raises(UsageError, match='channels_last=True'):
        run_benchmark(entry, input_size=(64, 64), conv_impl='nnpack',
                      channels_last=True)
    with pytest.raises(UsageError, match="needs conv_impl='nnpack'"):
        run_benchmark(entry, input_size=(64, 64), conv_impl='native',
                      compare_conv_impl=True)
    with pytest.raises(UsageError, match="needs backend='openvino' or "
                       "backend='onnxruntime'"):
        run_benchmark(entry, input_size=(64, 64), int8=True)
    with pytest.raises(UsageError, match='profile=True times the layers'):
        run_benchmark(entry, input_size=(64, 64), profile=True, compile=True)
    with pytest.raises(UsageError, match="the CPU: drop .*amp=True and keep "
                       "dtype='fp32'"):
        run_benchmark(entry, input_size=(64, 64), backend='onnxruntime',
                      dtype='bf16')
    with pytest.raises(UsageError, match=r"dtype=\['fp32', 'bf16'\] times a "
                       'bf16 copy .* drop amp=True'):
        run_benchmark(entry, input_size=(64, 64), dtype=('fp32', 'bf16'),
                      amp=True)
    with pytest.raises(UsageError, match='precisions side by side are fp32 '
                       'and bf16'):
        run_benchmark(entry, input_size=(64, 64), dtype=('fp32', 'fp16'))
    with pytest.raises(UsageError, match="use 'auto' or 'native'"):
        run_benchmark(entry, input_size=(64, 64), conv_impl='nnpack',
                      dtype='bf16')
    result = run_benchmark(entry, input_size=(64, 64), conv_impl='native',
                           iters=1, repeat=1, warmup=0, flops=False,
                           logger=lambda *a: None)
    assert result['env']['conv_impl'] == 'native'
    assert result['rows'][0].nnpack_convs == 0
    # kept kernel transforms are reported (they are not in the forward peak);
    # NNPACK at every size: A0's maps at 64x64 are below the size policy
    monkeypatch.setattr(NNPACKConv2d, 'skip_small', False)
    result = run_benchmark(entry, input_size=(64, 64),
                           conv_impl='nnpack-precomputed', iters=1, repeat=1,
                           warmup=0, flops=False, logger=lambda *a: None)
    (row, ) = result['rows']
    assert row.nnpack_convs > 0 and row.fused.kernel_transforms_mib > 0
    # every converted conv that the forward uses (not the auxiliary head's,
    # which inference skips) ran NNPACK in each of the 2 forwards (memory,
    # timing), counted at the calls
    ran = row.fused.nnpack_convs_ran
    assert 0 < ran == row.nnpack_convs - 1
    assert row.fused.nnpack_calls == 2 * ran
    assert row.fused.native_conv_calls == 0


@pytest.mark.parametrize('tool', ['benchmark.py', 'test.py'])
def test_tools_offer_every_conv_impl(tool):
    """The --conv-impl choices of the tools are repseg.ops.CONV_IMPLS."""
    import importlib.util

    from repseg.ops import CONV_IMPLS
    spec = importlib.util.spec_from_file_location(
        f'_tool_{tool[:-3]}', osp.join(ROOT, 'tools', tool))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    parser = mod.build_parser()
    for impl in CONV_IMPLS:
        args = parser.parse_args(['cfg.py', 'ckpt.pth', '--conv-impl', impl])
        assert args.conv_impl == impl
    with pytest.raises(SystemExit):
        parser.parse_args(['cfg.py', 'ckpt.pth', '--conv-impl', 'winograd'])


def test_compare_unfused_of_a_fused_config_is_refused():
    from repseg.apis import UsageError
    from repseg.benchmark import run_benchmark
    entry = dict(name='deployed', config=DEMO_CONFIG, cfg_options={
        'model.backbone.deploy': True, 'model.decode_head.norm_cfg': None,
        'model.auxiliary_head.norm_cfg': None})
    with pytest.raises(UsageError, match='already fused'):
        run_benchmark([entry], input_size=(64, 64), compare_unfused=True,
                      flops=False, repeat=1, iters=1, warmup=0)


def test_speed_vs_baseline_direction():
    """vs-baseline = the baseline's time / the model's time (> 1: faster
    than the baseline), checked against the timings of the same run."""
    from repseg.benchmark import markdown_table, run_benchmark
    small = {'model.decode_head.channels': 8,
             'model.auxiliary_head.channels': 8}
    entries = [dict(name='small', config=DEMO_CONFIG, baseline='big',
                    cfg_options=small),
               dict(name='big', config=DEMO_CONFIG)]
    result = run_benchmark(entries, input_size=(64, 64), flops=False, repeat=1,
                           iters=2, warmup=0, logger=lambda *a: None)
    rows = {r.name: r for r in result['rows']}
    ratio = rows['small'].speed_vs_baseline
    assert ratio == pytest.approx(rows['big'].fused.latency_ms /
                                  rows['small'].fused.latency_ms,
                                  rel=1e-9)
    assert rows['big'].speed_vs_baseline is None
    assert f'{ratio:.2f}x big' in markdown_table(result)


def test_gflops_and_params_by_hand():
    """fvcore's convention (one multiply-add = one FLOP), on a module whose
    count is known: two 3x3 convs and a 1x1."""
    from repseg.benchmark import count_gflops
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                                torch.nn.Conv2d(8, 16, 3, padding=2,
                                                dilation=2),
                                torch.nn.Conv2d(16, 4, 1))
    macs = 32 * 40 * (8 * 3 * 9 + 16 * 8 * 9 + 4 * 16)
    assert count_gflops(model, torch.randn(1, 3, 32, 40)) == \
        pytest.approx(macs / 1e9, rel=1e-9)
    # params of the fused demo model: every fused RepVGG layer is one 3x3
    # conv with bias, computed from the layer table
    model = reparameterize_model(build_for_benchmark(DEMO_CONFIG))
    bb = model.backbone
    widths, cin, expected = bb.out_channels, 3, 0
    for stage, _, _, groups in bb.layer_layout:
        cout = widths[stage]
        expected += cout * cin // groups * 9 + cout
        cin = cout
    assert sum(p.numel() for p in bb.parameters()) == expected


def test_fast_through_the_tool(tmp_path):
    out = tmp_path / 'bench'
    proc = subprocess.run(
        [sys.executable, TOOL, osp.join(CONFIG_DIR, 'pspnet_repvgg_b1g2.py'),
         '--fast', '--shape', '64', '--warmup', '0', '--iters', '1',
         '--repeat', '1', '--no-flops', '--out', str(out)],
        capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row, ) = json.loads((out / 'benchmark.json').read_text())['rows']
    assert row['dilation_mode'] == 'fast'
    assert '| fast |' in proc.stdout


def test_settings_of_a_tool_namespace():
    from repseg.benchmark import BenchmarkSettings
    from repseg.settings import Settings
    assert issubclass(BenchmarkSettings, Settings)
    assert 'of' not in vars(BenchmarkSettings)   # Settings' own of()
    s = BenchmarkSettings.of({'int8': True, 'config': 'x.py', 'repeat': 5,
                              'flops': True}, flops=False)
    assert (s.int8, s.repeat, s.flops, s.runtimes) == (True, 5, False, [])
    s = BenchmarkSettings.of({'backend': ['pytorch', 'openvino',
                                          'openvino']})
    assert s.runtimes == ['openvino']


def test_bf16_on_a_cpu_without_bf16_units_is_flagged(monkeypatch):
    """bf16 on a CPU without AVX512_BF16 / AMX logs that bf16 will be far
    slower there; with them, no such note."""
    from repseg.benchmark import run as run_module
    from repseg.benchmark import run_benchmark
    entry = [dict(name='a0', config=DEMO_CONFIG)]
    for isa, warned in (('AVX2', True), ('AVX-512 VNNI BF16 AMX', False)):
        monkeypatch.setattr(run_module, 'cpu_vector_isa',
                            lambda with_caps=True, isa=isa: isa)
        logs = []
        result = run_benchmark(entry, input_size=(64, 64),
                               dtype=('fp32', 'bf16'), iters=1,
                               repeat=1, warmup=0, flops=False,
                               logger=logs.append)
        assert result['rows'][0].runs['bf16'].img_per_s > 0
        noted = [m for m in logs if 'has no AVX512_BF16 or AMX' in m]
        assert bool(noted) == warned, logs
        if warned:
            assert '(AVX2)' in noted[0] and 'far slower' in noted[0]


def test_timings_that_cannot_be_trusted_are_flagged(monkeypatch):
    """A run whose repeats spread widely (or a busy machine) gets a note
    saying so and what to do; steady timings on an idle machine none."""
    from repseg.benchmark import measure
    monkeypatch.setattr(measure.os, 'getloadavg', lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(measure.os, 'cpu_count', lambda: 2)
    assert measure.contention_note({'a': [1.0, 1.05, 1.02]}) == ''
    note = measure.contention_note({'a': [0.057, 0.852, 0.06]},
                                   {'a': 'b1g2 (fused)'})
    assert note.startswith('timings may be unreliable: the repeats of '
                           'b1g2 (fused) spread by ')
    assert 'Re-run on an idle machine' in note
    monkeypatch.setattr(measure.os, 'getloadavg', lambda: (3.7, 3.0, 2.0))
    assert 'the load average is 3.7 on 2 CPUs' in measure.contention_note(
        {'a': [1.0, 1.0]})
