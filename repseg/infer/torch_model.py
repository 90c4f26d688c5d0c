# Copyright (c) repseg contributors. All rights reserved.
"""A config and a checkpoint as the network of an inference run: the
fused segmentor in PyTorch (3x3 convs on NNPACK where it pays on the CPU,
as the fused-eval hook runs them), wrapped as the runtimes' models are
(:class:`~repseg.deploy.runtimes.RuntimeModel`); in throughput mode the
workers' images of one size run in batches (:class:`~.batching.Batcher`),
torch's own threads sharing the cores."""
import os


def torch_identity(config: str, checkpoint: str) -> dict:
    """What the manifest records of a config and checkpoint."""
    from .job import file_identity
    return file_identity(checkpoint, config=os.path.abspath(config))


def torch_network(config: str, checkpoint: str, settings,
                  mode: str = 'latency'):
    import torch

    from ..deploy.build import SegForward, build_fused
    from ..deploy.runs import PYTORCH
    from ..deploy.runtimes import RunInfo, RuntimeModel
    from ..ops.nnpack_conv import resolve_conv_impl, use_nnpack_convs
    from .batching import Batcher
    from .job import Network
    from .recipe import config_recipe
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    recipe, cfg = config_recipe(config, None)
    model = build_fused(cfg, checkpoint).to(device).eval()
    impl = resolve_conv_impl('auto', device, torch.float32)
    model = use_nnpack_convs(model, impl, inplace=True)
    forward = SegForward(model)

    def run(x):
        with torch.no_grad():
            return forward(torch.from_numpy(x).to(device)).float().cpu(
            ).numpy()

    def labels(x):   # torch's argmax over the classes: threaded, fast
        with torch.no_grad():
            return forward(torch.from_numpy(x).to(device)).argmax(1).cpu(
            ).numpy()

    batch = settings.batch_size or (4 if mode == 'throughput' else 1)
    batchers = []
    if batch > 1:   # the workers' images of one size run together
        run, labels = batchers = [Batcher(run, batch), Batcher(labels, batch)]

    def close():
        for b in batchers:
            b.close()
    info = RunInfo(runtime=PYTORCH, file=checkpoint, precision='fp32',
                   kernels=f'PyTorch ({impl} 3x3 convs) on {device}',
                   threads=torch.get_num_threads(), mode=mode,
                   requests=batch)
    return Network(model=RuntimeModel(run, info, close=close, labels=labels),
                   recipe=recipe, identity=torch_identity(config, checkpoint))


__all__ = ['torch_network', 'torch_identity']
