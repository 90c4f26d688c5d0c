"""What every tool's command line shares (imported by the tools/ scripts,
which run with this folder on sys.path): the parser, and the flags several
tools take, spelled and explained the same way everywhere."""
import argparse
import os
import sys


def cfg_options_action():
    """mmengine's ``--cfg-options KEY=VALUE ...`` action, with a usage
    error instead of a traceback for an item without ``=`` (mmengine is
    imported here: tools without --cfg-options run without it)."""
    from mmengine.config import DictAction

    class CfgOptions(DictAction):

        def __call__(self, parser, namespace, values, option_string=None):
            bad = [v for v in values or () if '=' not in v]
            if bad:
                raise argparse.ArgumentError(
                    self, f'{bad[0]!r} is not KEY=VALUE (e.g. '
                    'model.backbone.arch=B2 or train_cfg.max_iters=100)')
            super().__call__(parser, namespace, values, option_string)

    return CfgOptions


def make_parser(doc: str, prog=None) -> argparse.ArgumentParser:
    """A tool's parser; its description is the tool's whole docstring
    (usage examples kept as written)."""
    return argparse.ArgumentParser(
        prog=prog, description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config(parser, what='the model and its data'):
    parser.add_argument(
        'config', help=f'The config file (mmseg style, .py) of {what}.')


def add_cfg_options(parser):
    parser.add_argument(
        '--cfg-options', nargs='+', action=cfg_options_action(),
        metavar='KEY=VALUE',
        help='Override settings of the config, e.g. '
        'model.backbone.arch=B2 train_cfg.max_iters=100 (a key that does not '
        'exist is refused with the nearest valid names).')


def add_unsafe_load(parser, what='the checkpoint'):
    parser.add_argument(
        '--unsafe-load', dest='allow_unsafe', action='store_true',
        help=f'Allow full unpickling of {what} when it needs it; it can run '
        'code from the file, so only for files you trust.')


def add_force(parser, what):
    parser.add_argument('--force', action='store_true',
                        help=f'Overwrite {what}; without it nothing that '
                        'exists is overwritten.')


def add_launcher(parser):
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='How the processes were started: none (one process, the '
        'default), pytorch (torchrun, as tools/dist_train.sh and '
        'dist_test.sh do), slurm (srun, as tools/slurm_train.sh and '
        'slurm_test.sh do) or mpi.')
    parser.add_argument(
        '--local_rank', '--local-rank', type=int, default=0,
        help='Set by older launchers (torch.distributed.launch); torchrun '
        'sets LOCAL_RANK instead. Not for users to set.')


def add_shape(parser, what):
    """``--shape S [S]`` (H W, or one side), spelled the same in every tool;
    the default is the size the config's test loop runs."""
    parser.add_argument(
        '--shape', dest='input_size', type=int, nargs='+', metavar='S',
        help=f'Input size of {what}: H W, or one side for a square. Default: '
        "the size the config's test loop runs (its sliding window, else its "
        'test images after resizing).')


def run(parser, main, argv=None):
    """Every tool's ``main``: parse ``argv``, then ``main(args)`` with the
    library imported lazily inside it; any ``RepsegError`` becomes one
    ``error:`` line (exit status 1). Returns what ``main`` returns."""
    args = parser.parse_args(argv)
    if hasattr(args, 'local_rank'):
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    from repseg.errors import RepsegError
    try:
        return main(args)
    except RepsegError as e:
        if getattr(e, 'abandons_threads', False):
            # threads stuck in native code would be joined at exit forever
            print(f'error: {e.render(parser)}', file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(1)
        sys.exit(f'error: {e.render(parser)}')


def add_backend(parser, what, nargs=None, default=None, extra=()):
    """``--backend`` with the registered runtimes as its choices, each
    with its label (``extra``: (name, label) pairs offered first, e.g.
    PyTorch for the benchmark)."""
    from repseg.deploy.runtimes import (DEFAULT_RUNTIME, runtime_label,
                                        runtime_names)
    pairs = list(extra) + [(n, runtime_label(n)) for n in runtime_names()]
    if default is None:
        default = [DEFAULT_RUNTIME] if nargs else None
    parser.add_argument(
        '--backend', nargs=nargs, default=default,
        choices=[n for n, _ in pairs],
        help=f'{what}: ' + ', '.join(f'{n} ({label})' for n, label in pairs)
        + '.')


def add_calib_method(parser):
    """``--calib-method`` with every registered runtime's statistics."""
    from repseg.deploy.runtimes import (DEFAULT_CALIB_METHOD,
                                        calibration_methods)
    methods = calibration_methods()
    parser.add_argument(
        '--calib-method', default=DEFAULT_CALIB_METHOD, choices=list(methods),
        help='The calibration statistic of the activation ranges (default '
        f'{DEFAULT_CALIB_METHOD}): ' + '; '.join(
            f'{m}: {what}' for m, what in methods.items()) + '.')
