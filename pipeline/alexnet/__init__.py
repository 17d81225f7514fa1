"""The AlexNet family whose layers the paper inverts (docs/method.md §3), in one package.

- :mod:`pipeline.alexnet.network` — the architectures, :func:`build`, :func:`preprocess`;
- :mod:`pipeline.alexnet.weights` — reading ``.caffemodel`` / ``.npz`` / ``.pth`` files;
- :mod:`pipeline.alexnet.activations` — CONV1 … FC8 as registered feature extractors.

Everything a stage that runs AlexNet executes lives here, so ``dvc.yaml`` lists this folder
as one dependency of those stages. The network API is re-exported:
``from pipeline import alexnet; alexnet.build("caffenet", weights="random:0")``.
"""

from __future__ import annotations

from pipeline.alexnet.network import (
    ARCHITECTURES,
    LAYERS,
    AlexNetBase,
    Architecture,
    CaffeNet,
    TorchvisionAlexNet,
    build,
    describe_weights,
    get_architecture,
    init_random_,
    is_random_weights,
    output_shape,
    parse_random_seed,
    preprocess,
)

__all__ = [
    "ARCHITECTURES",
    "LAYERS",
    "AlexNetBase",
    "Architecture",
    "CaffeNet",
    "TorchvisionAlexNet",
    "build",
    "describe_weights",
    "get_architecture",
    "init_random_",
    "is_random_weights",
    "output_shape",
    "parse_random_seed",
    "preprocess",
]
