# Copyright (c) repseg contributors. All rights reserved.
"""``repseg-infer``'s command line (``tools/infer.py`` is the same): the
parser and ``main``; any :class:`~repseg.errors.RepsegError` is one
``error:`` line (exit status 1). A config (PyTorch) given where the
training stack is not installed (the deployment install) is one line too,
naming the extra that installs it (:func:`require_training_stack`)."""
import argparse
import importlib.util
import sys
from typing import Optional, Tuple

from .job import INFER_MODES, InferSettings

DOC = """Segment your own images, folders and videos with any repseg model
file: a deployed file alone (.onnx for ONNX Runtime, .xml for OpenVINO;
fp32 or INT8) or a config with a training or fused checkpoint (PyTorch).
Label maps (PNG) keep each input's name under DIR/labels/, overlays go to
DIR/overlays/; a rerun into the same DIR resumes.

  repseg-infer street/ --model deploy/model_int8.xml --out out
  repseg-infer a.jpg b.png --model CONFIG --checkpoint CKPT --out out
  repseg-infer drive.mp4 --model m.onnx --out out --every 5 --overlay
  repseg-infer photos/ --model OLD.onnx --config CONFIG --out out
  repseg-infer /shared/archive --recursive --model m.xml \\
      --out /shared/out --ray --ray-address HEAD:6379 --threads 4
"""

#: what a config runs on (PyTorch and OpenMMLab; mmcv with its compiled
#: ops, which scripts/install.sh builds)
TRAINING_STACK = ('torch', 'mmengine', 'mmcv', 'mmcv._ext', 'mmseg')


def require_training_stack(what: str, instead: str) -> None:
    """Refuse, with one line naming the extra to install, to do ``what``
    (a config's work) where a package of the training stack cannot be
    found (the deployment install); nothing is imported but ``mmcv`` (to
    find its compiled ops).

    Args:
        what (str): what needs the stack, e.g. ``"the config 'a.py'"``.
        instead (str): what to do without it, e.g. ``'give a deployed
            file'``.

    Raises:
        UsageError: a package of :data:`TRAINING_STACK` is missing.
    """
    from ..errors import UsageError
    for name in TRAINING_STACK:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:   # its parent is missing or cannot import
            found = False
        if not found:
            raise UsageError(
                f'{what} needs the training stack ({name} is not installed '
                'here): pip install "repseg[train]" (mmcv with its compiled '
                'ops is built by scripts/install.sh, the training route), '
                f'or {instead}')


def config_named(model: str, config: Optional[str]
                 ) -> Optional[Tuple[str, str]]:
    """What in a command line needs the training stack, and what to do
    instead (:func:`require_training_stack`'s arguments): the config given
    as the model (run in PyTorch with its checkpoint) or as ``config`` (read
    for a deployed file without a recipe); None when only a deployed file
    is named.

    Args:
        model (str): the model the user named.
        config (str, optional): the config given with a deployed file.
    """
    from ..errors import opt
    if model.lower().endswith('.py'):
        return (f'the config {model!r} (a model run in PyTorch)',
                'give a deployed file exported from it (.onnx, .xml)')
    if config:
        return (f'reading the config {config!r}',
                'export the file again (files record their recipe now) and '
                f'drop {opt("config", None)}')
    return None


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """How the run goes: runtime mode and threads, PyTorch's device and
    batches, the pipeline, shards, Ray, the stall watchdog, progress and
    --force."""
    p.add_argument('--mode', choices=list(INFER_MODES),
                   help='Latency (one request with every thread), '
                   'throughput (several requests in flight) or auto '
                   '(throughput for more than one image; default '
                   '%(default)s).')
    p.add_argument('--threads', type=int,
                   help='Threads in all (streams x threads per stream; '
                   'default: every CPU this process may use).')
    p.add_argument('--cache-dir',
                   help="OpenVINO: a folder for compiled models (the next "
                   'run starts faster).')
    p.add_argument('--device',
                   help='PyTorch models: the device (cpu, cuda:0, ...; '
                   'default %(default)s).')
    p.add_argument('--batch-size', type=int, metavar='N',
                   help='PyTorch models: images of one size run N at a time '
                   '(default: 4 in throughput mode, 1 in latency mode).')
    p.add_argument('--no-pipeline', dest='pipeline', action='store_false',
                   help='Read, run and write one image after the other '
                   '(for comparison; the default overlaps them).')
    p.add_argument('--shard', metavar='K/N',
                   help='Take the K-th of every N inputs (stable sorted '
                   'order): N processes or machines split one job into one '
                   'DIR.')
    p.add_argument('--ray', action='store_true',
                   help='Run on Ray (a local cluster, or --ray-address): '
                   'actors of --threads CPUs each (default 2) hold the model; '
                   'DIR must be on a filesystem every worker shares.')
    p.add_argument('--ray-address', metavar='ADDR',
                   help='The Ray cluster to join (HOST:PORT or auto); '
                   'implies --ray.')
    p.add_argument('--stall-timeout', type=float, metavar='SECONDS',
                   help='End the run with one error line when an image has '
                   'not finished in SECONDS (default %(default)g; 20x the '
                   'slowest image so far when that is longer). Finished '
                   'images stay finished; a rerun resumes.')
    p.add_argument('--quiet', action='store_true',
                   help='No progress bar.')
    # the sentence tools/_cli.add_force makes of every tool's --force
    p.add_argument('--force', action='store_true',
                   help='Overwrite the outputs of another run in DIR: they '
                   'are deleted first and everything is redone (files no run '
                   'wrote are never deleted; not with --shard); without it '
                   'nothing that exists is overwritten.')


def infer_parser(doc: str = DOC, prog: Optional[str] = None
                 ) -> argparse.ArgumentParser:
    """``repseg-infer``'s parser (``tools/infer.py``'s with that tool's
    docstring).

    Args:
        doc (str): the description (usage examples kept as written).
        prog (str, optional): the command's name in the usage line.
    """
    p = argparse.ArgumentParser(
        prog=prog, description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', nargs='+', metavar='INPUT',
                   help='Image files, folders, glob patterns, .txt files '
                   'listing one path per line, or video files.')
    p.add_argument('--model', required=True,
                   help='A deployed file (.onnx, .xml) or a config (.py) '
                   'with --checkpoint.')
    p.add_argument('--checkpoint',
                   help="The config's training or fused checkpoint.")
    p.add_argument('--config',
                   help='The config a deployed file was exported from, for '
                   'files that do not record their inference recipe.')
    p.add_argument('--out', required=True, metavar='DIR',
                   help='The output folder (labels/, overlays/, '
                   'manifest.json, done.txt, failures.txt).')
    p.add_argument('--recursive', action='store_true',
                   help='Search folders recursively.')
    p.add_argument('--every', type=int, metavar='N',
                   help="Segment a video's every N-th frame (default "
                   '%(default)s).')
    p.add_argument('--label-ids', action='store_true',
                   help='Write Cityscapes label ids (for its evaluation '
                   'server) instead of train ids.')
    p.add_argument('--overlay', action='store_true',
                   help='Also write overlays of the label colours (and an '
                   'overlay video per video).')
    p.add_argument('--opacity', type=float,
                   help='The opacity of the overlay colours (default '
                   '%(default)s).')
    p.add_argument('--areas', action='store_true',
                   help="Write each image's class pixel shares to "
                   'DIR/areas.csv.')
    _add_run_flags(p)
    InferSettings.defaults_into(p)
    return p


def infer_args(args: argparse.Namespace) -> None:
    """Segment what ``args`` (the parsed command line) names: a note on
    stderr per folder whose subfolders are not searched, a ``failed:``
    line per image that failed as it does, the summary on stdout; exit
    status 1 when an image failed.

    Args:
        args (argparse.Namespace): what :func:`infer_parser` parsed.
    """
    from . import Segmenter
    from .outputs import check_out_dir
    from .sources import unsearched_subfolders
    if not args.recursive:
        for folder, n in unsearched_subfolders(args.inputs).items():
            sys.stderr.write(
                f'note: {n} subfolder(s) of {folder!r} hold images or '
                'videos and are not searched: add --recursive to segment '
                'them too\n')

    def failed(result):   # one line per image that failed, as it does
        if result.status == 'failed':
            sys.stderr.write(f'failed: {result.input}: {result.reason}\n')
            sys.stderr.flush()

    needs = config_named(args.model, args.config)
    # as repseg.apis.infer: the output folder checked before the model loads
    with Segmenter(args.model, args.checkpoint, args.config,
                   InferSettings.of(vars(args))) as seg:
        check_out_dir(args.out, seg.settings.force,
                      seg.settings.shard_of is not None)
        if needs:   # one line where the training stack is missing
            require_training_stack(*needs)
        for result in seg(args.inputs, args.out):
            failed(result)
    sys.stdout.write('\n'.join(seg.summary.lines()) + '\n')
    if seg.summary.failed:
        sys.exit(1)


def main(argv=None) -> None:
    """``repseg-infer``.

    Args:
        argv (list of str, optional): the arguments (default: the command
            line's).
    """
    from ..errors import run_command
    parser = infer_parser(prog='repseg-infer')
    run_command(parser, infer_args, parser.parse_args(argv))


__all__ = ['infer_parser', 'infer_args', 'main', 'require_training_stack',
           'config_named', 'TRAINING_STACK']
