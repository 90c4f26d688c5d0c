# Copyright (c) repseg contributors. All rights reserved.
"""Export and convert entry points (tools/export.py, tools/convert.py):
the library calls and the lines the tools print about their results."""
from typing import List, Optional, Sequence

from mmengine.config import Config

from ..deploy.convert import convert_checkpoint
from ..deploy.onnx import ExportSettings, export_model
from ..deploy.runtimes import DEFAULT_RUNTIME, runtime_of_file
from ..reparam.verify import describe


def export(cfg: Config, checkpoint: Optional[str], out: str,
           settings: Optional[ExportSettings] = None) -> dict:
    """Export the fused segmentor to ``out`` for the runtime of
    ``settings.backend`` (default: the one whose files end like ``out``,
    else the portable one) and verify it against PyTorch
    (:func:`repseg.deploy.onnx.export_model`)."""
    settings = settings or ExportSettings(backend=None)
    if settings.backend is None:
        found = runtime_of_file(out)
        settings.backend = found.name if found else DEFAULT_RUNTIME
    return export_model(cfg, checkpoint, out, settings)


def export_summary(r: dict) -> List[str]:
    """What tools/export.py prints about :func:`export`'s result."""
    lines = [f"wrote {' + '.join(r['files'])} ({r['bytes'] / 2**20:.1f} "
             f"MiB); its input and output are described in {r['spec']}"]
    if r.get('dynamic_shape'):
        lines.append('dynamic H and W: the file takes inputs of any size '
                     '(traced at {}x{}; --fixed-shape: a file of one '
                     'size)'.format(*r['input_size']))
    else:
        lines.append('fixed input size {}x{} (--dynamic-shape: a file that '
                     'takes any size)'.format(*r['input_size']))
    if 'runtime' in r:
        i = r['runtime']
        sizes = [f'{h}x{w}' for h, w in r.get('verify_sizes',
                                               [r['input_size']])]
        on = (f'a {sizes[0]} input' if len(sizes) == 1 else
              f"{' and '.join(sizes)} inputs")
        lines.append(f'{i.runtime} ({i.precision}, {i.threads} threads) vs '
                     f'PyTorch on {on}: ' + describe(r))
    return lines


def convert(cfg: Config, checkpoint: str, out: str, force: bool = False,
            input_size: Optional[Sequence[int]] = None,
            allow_unsafe: bool = False) -> dict:
    """Fuse a training checkpoint into a deploy checkpoint and its deploy
    config (:func:`repseg.deploy.convert_checkpoint`)."""
    return convert_checkpoint(cfg, checkpoint, out, force, input_size,
                              allow_unsafe)


def convert_summary(r: dict) -> List[str]:
    """What tools/convert.py prints about :func:`convert`'s result."""
    h, w = r['input_size']
    return [f"wrote {r['out']} ({r['fused_bytes'] / 2**20:.1f} MiB; training "
            f"checkpoint {r['source_bytes'] / 2**20:.1f} MiB) and "
            f"{r['deploy_config']}",
            f"max |fused - unfused| = {r['max_abs_diff']:.3g}  argmax "
            f"agreement = {100 * r['argmax_agreement']:.4f}% on a {h}x{w} "
            'input']


__all__ = ['export', 'export_summary', 'convert', 'convert_summary']
