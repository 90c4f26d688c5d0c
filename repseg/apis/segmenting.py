# Copyright (c) repseg contributors. All rights reserved.
"""Inference on a user's images, folders and videos (tools/infer.py):
:func:`infer` (``repseg.apis.infer``)."""
from typing import Optional, Sequence

from ..infer import InferSettings, Segmenter


def infer(inputs: Sequence[str], model: str, out_dir: str,
          checkpoint: Optional[str] = None, config: Optional[str] = None,
          settings: Optional[InferSettings] = None,
          on_result=None) -> Segmenter:
    """Segment ``inputs`` with ``model`` into ``out_dir`` (see
    :class:`repseg.infer.Segmenter`); ``on_result(result)`` is called for
    each image as it finishes. Returns the segmenter, closed (its
    ``summary`` holds the counts and speed). An output folder that cannot
    be one (a file; ``force`` with ``shard``) is refused before the model
    loads."""
    from ..infer.outputs import check_out_dir
    with Segmenter(model, checkpoint, config, settings) as seg:
        check_out_dir(out_dir, seg.settings.force,
                      seg.settings.shard_of is not None)
        for result in seg(inputs, out_dir):
            if on_result is not None:
                on_result(result)
    return seg


__all__ = ['infer']
