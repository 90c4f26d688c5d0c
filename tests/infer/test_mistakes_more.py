"""Issue 35, item 5: tools/infer.py's mistakes, each one ``error:`` line
naming the fix (and a note, not an error, for folders not searched
without --recursive). The tool's ``main`` runs in this process (its
``error:`` line is the SystemExit message tools/_cli.py exits with); one
test runs it as a subprocess, as a user does."""
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.utils import ROOT, one_error_line, random_onnx, tool_module

TOOL = osp.join(ROOT, 'tools', 'infer.py')


def error_line(*argv) -> str:
    """The one ``error:`` line tools/infer.py exits with for ``argv``."""
    with pytest.raises(SystemExit) as e:
        tool_module(TOOL).main(list(argv))
    line = str(e.value.code)
    assert line.startswith('error: ') and '\n' not in line, line
    return line


def run_tool(capsys, *argv):
    """(exit status, stdout, stderr) of tools/infer.py run with ``argv``."""
    try:
        tool_module(TOOL).main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope='module')
def model(synthetic_root, tmp_path_factory):
    """(config, checkpoint, ONNX file) of the tiny random model."""
    return random_onnx(synthetic_root,
                       tmp_path_factory.mktemp('mistakes_more'))


@pytest.fixture
def folder(tmp_path):
    """a.png, and sub/b.png and deeper/er/c.png in two subfolders."""
    img = (np.arange(64 * 128 * 3) % 251).astype(np.uint8).reshape(64, 128,
                                                                   3)
    d = tmp_path / 'photos'
    (d / 'sub').mkdir(parents=True)
    (d / 'deeper' / 'er').mkdir(parents=True)
    (d / 'empty').mkdir()
    for p in ('a.png', 'sub/b.png', 'deeper/er/c.png'):
        cv2.imwrite(str(d / p), img)
    return d


def test_the_output_folder_mistakes(model, folder, tmp_path):
    _, _, onnx = model
    a = str(folder / 'a.png')
    # --out under a file
    line = error_line(a, '--model', onnx, '--out', a + '/out')
    assert 'cannot be created' in line and 'give a folder you can write ' \
        'to' in line, line
    # --force with --shard: the shards would delete each other's outputs
    line = error_line(a, '--model', onnx, '--out', str(tmp_path / 'o'),
                      '--force', '--shard', '1/2')
    assert '--force with --shard: each shard would delete' in line, line
    assert 'then run the shards without --force' in line, line
    # a folder of someone else's files named like a run's: --force refused
    theirs = tmp_path / 'theirs'
    (theirs / 'labels').mkdir(parents=True)
    (theirs / 'manifest.json').write_text('{"version": 3}')
    line = error_line(a, '--model', onnx, '--out', str(theirs), '--force')
    assert "its manifest.json is not an inference run's, or is damaged" \
        in line and '(labels, manifest.json)' in line, line
    assert '--force deletes only the outputs of a run' in line, line
    assert (theirs / 'manifest.json').read_text() == '{"version": 3}'


@pytest.mark.slow
def test_out_naming_a_file_as_a_user_runs_it(model, folder):
    """It was a 20-line FileExistsError traceback."""
    _, _, onnx = model
    a = str(folder / 'a.png')
    line = one_error_line(subprocess.run(
        [sys.executable, TOOL, a, '--model', onnx, '--out', a],
        capture_output=True, text=True, cwd=ROOT, timeout=600))
    assert line == f"error: the output folder '{a}' is a file: give a " \
        "folder (a new one, or an earlier run's to resume it)", line


def test_the_model_file_mistakes(model, folder, tmp_path):
    path, ckpt, onnx = model
    a = str(folder / 'a.png')
    out = str(tmp_path / 'o')
    # a deployed file given as --checkpoint (it was "truncated or not a
    # PyTorch checkpoint (UnpicklingError ...)")
    line = error_line(a, '--model', path, '--checkpoint', onnx, '--out', out)
    assert f"'{onnx}' is a deployed model file, not a PyTorch checkpoint: " \
        f'give it as --model {onnx} alone' in line, line
    # the config and the checkpoint the other way round
    line = error_line(a, '--model', ckpt, '--checkpoint', path, '--out', out)
    assert f'the other way round: give the config as --model {path} and ' \
        f'the checkpoint as --checkpoint {ckpt}' in line, line
    # --config with a config
    line = error_line(a, '--model', path, '--checkpoint', ckpt, '--config',
                      path, '--out', out)
    assert 'is the config itself: drop --config' in line, line
    # OpenVINO's weights instead of its .xml
    xml, weights = tmp_path / 'm.xml', tmp_path / 'm.bin'
    xml.write_text('<net/>')
    weights.write_bytes(b'\0')
    line = error_line(a, '--model', str(weights), '--out', out)
    assert f'give --model {xml}' in line, line
    # a folder as --model
    line = error_line(a, '--model', str(tmp_path), '--out', out)
    assert 'is a folder: give a deployed file' in line, line
    assert not osp.exists(out)


def test_inputs_mistakes_and_the_recursive_note(model, folder, tmp_path,
                                                capsys):
    _, _, onnx = model
    # a list whose relative paths are not from its folder
    lst = tmp_path / 'lists' / 'l.txt'
    lst.parent.mkdir()
    lst.write_text('photos/a.png\nphotos/sub/b.png\n')
    line = error_line(str(lst), '--model', onnx, '--out',
                      str(tmp_path / 'o'))
    assert f"none of the 2 paths listed in '{lst}' exists" in line, line
    assert "relative paths are read from the list's own folder" in line
    # no image at the top: the error says how many subfolders hold some
    line = error_line(str(folder / 'deeper'), '--model', onnx, '--out',
                      str(tmp_path / 'o'))
    assert 'searched recursively only with --recursive; 1 subfolder(s) ' \
        'hold some' in line, line
    capsys.readouterr()
    # without --recursive: a note, and the run goes on
    code, out, err = run_tool(capsys, str(folder), '--model', onnx, '--out',
                              str(tmp_path / 'o'), '--quiet')
    assert code == 0, err
    assert f"note: 2 subfolder(s) of '{folder}' hold images or videos and " \
        'are not searched: add --recursive' in err, err
    assert '1 done' in out
    # an output folder inside the input folder: not segmented next time
    args = [str(folder), '--recursive', '--model', onnx, '--out',
            str(folder / 'out'), '--quiet']
    code, out, err = run_tool(capsys, *args)
    assert '3 done' in out, err
    code, out, err = run_tool(capsys, *args)
    assert '0 done, 3 skipped' in out, err
    assert 'note:' not in err
