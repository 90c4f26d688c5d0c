# Copyright (c) repseg contributors. All rights reserved.
"""Segmenting a user's images, folders and videos with any repseg model
file (tools/infer.py): :class:`Segmenter` (the shape of mmseg's
``MMSegInferencer(model, weights)``) yields one :class:`Result` per image.
The test pipeline is numpy and OpenCV (:mod:`.predict`, with the recipe a
deployed file records: :mod:`.recipe`); inputs (:mod:`.sources`), outputs
and the resumable manifest (:mod:`.outputs`), the run driver
(:mod:`.driver`) with its executors (threads in this process:
:mod:`.engine`; Ray actors: :mod:`.distributed`) and the network
(:mod:`.network`) are torch-free for deployed files."""
import functools
import os.path as osp
from typing import Iterator, Optional, Sequence, Union

from ..deploy.runtimes import runtime_of_file
from ..errors import UsageError, opt
from .driver import Job, drive, plan
from .engine import ThreadExecutor
from .job import InferSettings, Network, Result, Summary
from .network import describe_network, load_network
from .predict import segment
from .recipe import Recipe
from .sources import read_image


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
        lists, videos) into ``out_dir``: one :class:`Result` per image (in
        input order in this process; on Ray as the actors finish them);
        :attr:`summary` is complete when the iterator is."""
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        sources, total = plan(inputs, self.settings)
        self.summary = Summary()
        s = self.settings
        if s.ray or s.ray_address:
            from .distributed import RayExecutor

            # the driver reads the model's record and recipe, the actors
            # compile it
            net = describe_network(self.model, self.checkpoint, self.config)
            executor = RayExecutor(
                functools.partial(load_network, self.model, self.checkpoint,
                                  self.config), s, out_dir, s.ray_address,
                deployed=runtime_of_file(self.model) is not None)
        else:
            net = self.load(total)
            executor = ThreadExecutor(net, s, out_dir)
        return drive(Job(sources, total, out_dir, s, net, self.summary),
                     executor)


__all__ = ['Segmenter', 'InferSettings', 'Result', 'Summary', 'Recipe',
           'Network', 'load_network', 'segment', 'read_image']
