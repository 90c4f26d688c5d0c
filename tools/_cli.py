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


def add_dynamic_shape(parser):
    """``--dynamic-shape`` / ``--fixed-shape``: whether a deployed file takes
    any input size; default: dynamic for a whole-image config, fixed for a
    sliding-window one."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument(
        '--dynamic-shape', dest='dynamic_shape', action='store_const',
        const=True, default=None,
        help='A file that runs any input size exactly as the config does '
        "(PSPNet's pooling bins are computed from the input in the graph), "
        'verified at the export size and at another; the default for a '
        'whole-image config (as fast as a fixed file at its size).')
    g.add_argument(
        '--fixed-shape', dest='dynamic_shape', action='store_const',
        const=False,
        help='A file of one input size (--shape); the default for a '
        'sliding-window config (its windows have one size). Under a '
        'whole-image config an image whose resized size differs is '
        'resized to the file\'s size and back: close to, not exactly, what '
        'the config computes.')


def run(parser, main, argv=None):
    """Every tool's ``main``: parse ``argv``, then ``main(args)`` with the
    library imported lazily inside it; any ``RepsegError`` becomes one
    ``error:`` line (exit status 1), and so does a flag the tool no longer
    has (:func:`remove_flag`). Returns what ``main`` returns."""
    _refuse_removed(parser, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if hasattr(args, 'local_rank'):
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    from repseg.apis import run_command   # what the console scripts do too
    return run_command(parser, main, args)


def add_backend(parser, what, nargs=None, default=None, extra=()):
    """``--backend`` with the registered runtimes as its choices, each
    with its label (``extra``: (name, label) pairs offered first, e.g.
    PyTorch for the benchmark)."""
    from repseg.apis import DEFAULT_RUNTIME, runtime_label, runtime_names
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
    from repseg.apis import DEFAULT_CALIB_METHOD, calibration_methods
    methods = calibration_methods()
    parser.add_argument(
        '--calib-method', default=DEFAULT_CALIB_METHOD, choices=list(methods),
        help='The calibration statistic of the activation ranges (default '
        f'{DEFAULT_CALIB_METHOD}): ' + '; '.join(
            f'{m}: {what}' for m, what in methods.items()) + '.')


def add_runtime_options(parser):
    """One flag per own setting of every registered runtime (its
    ``own_options``: name, default, help, choices), each said once here:
    ``--NAME`` (or the setting's own flag), the runtimes that have it
    first in its help, its default last."""
    from repseg.apis import runtime_settings
    for name, (field, owners) in runtime_settings().items():
        meta, default = field.metadata, field.default
        flag = meta.get('flag') or '--' + name.replace('_', '-')
        kind = dict(dest=name, default=default)
        if isinstance(default, bool):
            kind['action'] = 'store_false' if default else 'store_true'
        elif isinstance(default, tuple):
            kind.update(nargs='*', default=list(default),
                        metavar=meta.get('metavar') or 'VALUE')
        else:
            kind.update(type=type(default), choices=meta.get('choices'))
        text = meta['help']
        if not isinstance(default, bool):   # a switch says it in words
            text = text[:-1] + ' (default ' + (' '.join(map(
                str, default)) if isinstance(default, tuple) else
                str(default)) + ').'
        if text[1:2].islower():
            text = text[0].lower() + text[1:]
        parser.add_argument(flag, help=' / '.join(c.label for c in owners)
                            + ': ' + text, **kind)


def remove_flag(parser, flag, replacement):
    """``flag`` is no longer a flag of the tool: given, :func:`run` says
    so and names its ``replacement`` in one ``error:`` line."""
    if not hasattr(parser, 'removed_flags'):
        parser.removed_flags = {}
    parser.removed_flags[flag] = replacement


def _refuse_removed(parser, argv):
    for arg in argv:
        flag = arg.split('=', 1)[0]
        if flag in getattr(parser, 'removed_flags', {}):
            sys.exit(f'error: {flag} was removed: '
                     f'{parser.removed_flags[flag]}')
