"""The deployed-model contract (issue 35): one typed record
(:class:`repseg.deploy.runtimes.record.ModelRecord` with its ``Recipe``),
read from a file's metadata in one place, with a schema version: files of
older repseg versions load with defaults for what they lack, a record of a
newer schema or with keys this repseg does not know is refused with one
line, and the input size is stored once (the recipe's is the record's)."""
import dataclasses
import json

import onnx
import pytest

from repseg.deploy.onnx import ExportSettings, export_model
from repseg.deploy.record import check_belongs, record_of
from repseg.deploy.runtimes import (SCHEMA, ModelRecord, Recipe,
                                    get_runtime)
from repseg.deploy.runtimes.record import RECORD_KEY
from repseg.errors import UsageError
from repseg.infer.network import describe_network, load_network

from tests.utils import random_model

SIZE = (64, 64)


@pytest.fixture(scope='module')
def exported(synthetic_root, tmp_path_factory):
    """(config, cfg, ONNX file at 64x64, its record as written)."""
    tmp = tmp_path_factory.mktemp('contract')
    path, ckpt, cfg = random_model(synthetic_root, tmp, 'rec')
    out = str(tmp / 'm.onnx')
    export_model(cfg, ckpt, out, ExportSettings(
        input_size=SIZE, dynamic_shape=False, verify=False))
    return path, cfg, out, _metadata(out)


def _metadata(path: str) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(
        path).metadata_props}[RECORD_KEY])


def _with_record(src: str, dst: str, record: dict) -> str:
    """A copy of the ONNX file ``src`` whose record is ``record``."""
    m = onnx.load(src)
    for p in m.metadata_props:
        if p.key == RECORD_KEY:
            p.value = json.dumps(record)
    onnx.save(m, dst)
    return dst


def _read(path: str):
    return get_runtime('onnxruntime').read_info(path)


def test_the_written_record_is_typed_versioned_and_sized_once(exported):
    path, cfg, out, written = exported
    assert written['schema'] == SCHEMA == 3
    assert written['recipe']['slide'] is False and \
        'mode' not in written['recipe']
    assert written['input_size'] == list(SIZE)
    assert 'input_size' not in written['recipe']   # stored once
    info = _read(out)
    record = info.record
    assert isinstance(record, ModelRecord)
    assert isinstance(record.recipe, Recipe)
    assert record.input_size == SIZE == record.recipe.input_size
    assert record.to_dict() == written
    assert ModelRecord.from_dict(record.to_dict()) == record
    assert record == record_of(cfg, SIZE)
    # what inference runs with is the record's recipe, size included
    net = load_network(out)
    try:
        assert net.recipe == record.recipe
        assert net.recipe.input_size == SIZE
        assert net.identity['record'] == written
    finally:
        net.close()
    # dict-style reading of callers written when the record was a dict
    assert info.record.backbone == record.backbone
    assert tuple(info.record.recipe.input_size) == SIZE


def test_one_input_size():
    """The recipe's input size is the record's, however either is made."""
    r = ModelRecord(input_size=(32, 48), recipe=Recipe(input_size=(8, 8)))
    assert r.recipe.input_size == (32, 48)
    r = dataclasses.replace(r, input_size=None)
    assert r.recipe.input_size is None
    assert 'input_size' not in r.to_dict()['recipe']


def _mode_recipe(recipe: dict, **extra) -> dict:
    """A recipe as schemas 1 and 2 wrote it: ``mode`` 'whole' or 'slide'
    where schema 3 writes ``slide``."""
    old = {k: v for k, v in recipe.items() if k != 'slide'}
    return dict(old, mode='slide' if recipe['slide'] else 'whole', **extra)


OLD = {
    # schema 2: the recipe said mode='whole' / 'slide'
    'schema 2': lambda w: dict(w, schema=2, recipe=_mode_recipe(
        w['recipe'])),
    # the record of files written before the schema key (the recipe
    # repeated the input size)
    'schema 1 with recipe': lambda w: dict(
        {k: v for k, v in w.items() if k != 'schema'},
        recipe=_mode_recipe(w['recipe'], input_size=w['input_size'])),
    # before the recipe was recorded
    'without recipe': lambda w: {k: v for k, v in w.items()
                                 if k not in ('schema', 'recipe')},
    # the first records (commit 21d65db): no block type, no recipe
    'without block_type and recipe': lambda w: {
        k: w[k] for k in ('config', 'backbone', 'dilation_mode',
                          'decode_head', 'num_classes', 'classes',
                          'input_size')},
}


@pytest.mark.parametrize('name', list(OLD))
def test_files_of_older_repseg_load_with_defaults(exported, tmp_path, name):
    path, cfg, out, written = exported
    old = OLD[name](written)
    f = _with_record(out, str(tmp_path / 'old.onnx'), old)
    info = _read(f)
    record = info.record
    assert record.schema == old.get('schema', 1)
    assert (record.backbone, record.num_classes, record.input_size) == (
        written['backbone'], written['num_classes'], SIZE)
    for key in ModelRecord.__dataclass_fields__:
        if key not in old and key not in ('schema', 'recipe'):
            assert getattr(record, key) is None, key
    check_belongs(f, info, cfg, SIZE)   # still the config's model
    if 'recipe' in old:
        assert record.recipe == record_of(cfg, SIZE).recipe
        assert record.recipe.input_size == SIZE
        assert describe_network(f).recipe == record.recipe
    else:
        assert record.recipe is None
        with pytest.raises(UsageError, match='carries no inference recipe'):
            describe_network(f)
        assert describe_network(f, config=path).recipe.input_size == SIZE
    # written again, it is of the current schema, the size once
    again = record.to_dict()
    assert again['schema'] == SCHEMA and ModelRecord.from_dict(again) == \
        dataclasses.replace(record, schema=SCHEMA)


def _refused(path: str, match: str) -> str:
    with pytest.raises(UsageError, match=match) as e:
        _read(path)
    with pytest.raises(UsageError, match=match):
        get_runtime('onnxruntime').load(path)
    text = str(e.value)
    assert '\n' not in text and 'upgrade repseg' in text and \
        'export the model again' in text
    assert repr(path) in text   # names the file
    return text


@pytest.mark.parametrize('where', ['record', 'recipe', 'old record'])
def test_unknown_keys_are_refused(exported, tmp_path, where):
    path, cfg, out, written = exported
    record = json.loads(json.dumps(written))
    if where == 'recipe':
        record['recipe']['gamma'] = 2.2
    else:
        record['gamma'] = 2.2
        if where == 'old record':
            del record['schema']
    _refused(_with_record(out, str(tmp_path / 'u.onnx'), record), 'gamma')
    with pytest.raises(UsageError, match='gamma'):
        Recipe.from_dict(dict(written['recipe'], gamma=2.2))


@pytest.mark.parametrize('schema', [SCHEMA + 1, 'two', 0])
def test_newer_or_broken_schemas_are_refused(exported, tmp_path, schema):
    path, cfg, out, written = exported
    f = _with_record(out, str(tmp_path / 'n.onnx'),
                     dict(written, schema=schema))
    text = _refused(f, 'schema')
    if schema == SCHEMA + 1:
        assert 'newer repseg' in text


def test_openvino_reads_the_same_record(exported, tmp_path):
    """OpenVINO's files carry the record (rt_info) through the same
    reading: loaded typed, a newer schema refused."""
    path, cfg, out, written = exported
    ov = get_runtime('openvino')
    xml = ov.from_onnx(out, str(tmp_path / 'm.xml'))
    assert ov.read_info(xml).record == _read(out).record
    newer = _with_record(out, str(tmp_path / 'n.onnx'),
                         dict(written, schema=SCHEMA + 1))
    xml = ov.from_onnx(newer, str(tmp_path / 'n.xml'))
    with pytest.raises(UsageError, match='newer repseg'):
        ov.read_info(xml)


def test_the_test_mode_of_older_records_reads_as_slide():
    """Schemas 1 and 2 said ``mode='whole'/'slide'``; schema 3 says
    ``slide`` (``mode`` means latency or throughput only)."""
    window = dict(crop_size=[64, 64], stride=[43, 43])
    for schema, mode, slide in [(2, 'slide', True), (2, 'whole', False),
                                (1, 'slide', True)]:
        d = dict(recipe=dict(window, mode=mode))
        if schema > 1:
            d['schema'] = schema
        recipe = ModelRecord.from_dict(d).recipe
        assert recipe.slide is slide and recipe.crop_size == (64, 64)
    with pytest.raises(UsageError, match="test mode 'tiles'"):
        ModelRecord.from_dict(dict(schema=2, recipe=dict(mode='tiles')))
    # schema 3 knows no recipe key 'mode'
    with pytest.raises(UsageError, match=r'recipe keys .*\(mode\)'):
        ModelRecord.from_dict(dict(schema=3, recipe=dict(mode='whole')))
