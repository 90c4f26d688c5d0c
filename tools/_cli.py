"""What every tool's command line shares (imported by the tools/ scripts,
which run with this folder on sys.path): the parser, and the flags several
tools take, spelled and explained the same way everywhere."""
import argparse

from mmengine.config import DictAction


class CfgOptions(DictAction):
    """mmengine's ``--cfg-options KEY=VALUE ...``, with a usage error
    instead of a traceback for an item without ``=``."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values or () if '=' not in v]
        if bad:
            raise argparse.ArgumentError(
                self, f'{bad[0]!r} is not KEY=VALUE (e.g. '
                'model.backbone.arch=B2 or train_cfg.max_iters=100)')
        super().__call__(parser, namespace, values, option_string)


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
        '--cfg-options', nargs='+', action=CfgOptions, metavar='KEY=VALUE',
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
        '--shape', type=int, nargs='+', metavar='S',
        help=f'Input size of {what}: H W, or one side for a square. Default: '
        "the size the config's test loop runs (its sliding window, else its "
        'test images after resizing).')
