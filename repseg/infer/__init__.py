# Copyright (c) repseg contributors. All rights reserved.
"""Segmenting a user's images, folders and videos with any repseg model
file (tools/infer.py): :class:`Segmenter` (the shape of mmseg's
``MMSegInferencer(model, weights)``) yields one :class:`Result` per image.
The test pipeline is numpy and OpenCV (:mod:`.predict`, with the recipe a
deployed file records: :mod:`.recipe`); inputs (:mod:`.sources`), outputs
and the resumable manifest (:mod:`.outputs`), the pipelined run
(:mod:`.engine`) and the network (:mod:`.network`) are torch-free for
deployed files."""
import os.path as osp
from typing import Iterator, Optional, Sequence, Union

from ..errors import UsageError, opt
from .engine import (InferSettings, Network, Result, Summary, plan,
                     read_image, run)
from .network import load_network
from .predict import segment
from .recipe import Recipe


class Segmenter:
    """Segment images with a model file.

    Args:
        model (str): a deployed file (.onnx, OpenVINO .xml; fp32 or INT8)
            or a config (.py) with ``checkpoint``.
        checkpoint (str, optional): the config's training or fused
            checkpoint.
        config (str, optional): for deployed files exported before they
            recorded their inference recipe.
        settings (InferSettings, optional): see :class:`InferSettings`.

    Example::

        seg = Segmenter('deploy/model_int8.xml')
        for r in seg(['street/'], 'out'):
            print(r.input, r.status, r.files)
        print('\\n'.join(seg.summary.lines()))
    """

    def __init__(self, model: str, checkpoint: Optional[str] = None,
                 config: Optional[str] = None,
                 settings: Optional[InferSettings] = None):
        self.model, self.checkpoint, self.config = model, checkpoint, config
        self.settings = settings or InferSettings()
        self.settings.check()
        if not osp.exists(model):
            raise UsageError(f'model {model!r} does not exist: give a '
                             'deployed file (.onnx, .xml) or a config (.py) '
                             f'with {opt("checkpoint", "CKPT")}')
        self.network: Optional[Network] = None
        self.summary = Summary()

    def load(self, images: int = 1) -> Network:
        """Load the network (once; ``images`` decides the 'auto' mode)."""
        if self.network is None:
            self.network = load_network(self.model, self.checkpoint,
                                        self.config, self.settings, images)
        return self.network

    def close(self) -> None:
        """Release the loaded network (its threads); a later call loads it
        again. ``with Segmenter(...) as seg:`` closes on leaving."""
        if self.network is not None:
            self.network.close()
            self.network = None

    def __enter__(self) -> 'Segmenter':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, inputs: Union[str, Sequence[str]],
                 out_dir: str) -> Iterator[Result]:
        """Segment every image of ``inputs`` (files, folders, globs, .txt
        lists, videos) into ``out_dir``: one :class:`Result` per image, in
        input order; :attr:`summary` is complete when the iterator is."""
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        sources, total = plan(inputs, self.settings)
        self.summary = Summary()
        s = self.settings
        if s.ray or s.ray_address:
            from .distributed import run_on_ray
            return run_on_ray(self.model, sources, total, out_dir,
                              self.checkpoint, self.config, s, self.summary,
                              s.ray_address)
        net = self.load(total)
        return run(net, sources, total, out_dir, s, self.summary)


__all__ = ['Segmenter', 'InferSettings', 'Result', 'Summary', 'Recipe',
           'Network', 'load_network', 'segment', 'read_image']
