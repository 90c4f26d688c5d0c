"""What every tool's command line shares (imported by the tools/ scripts,
which run with this folder on sys.path)."""
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
