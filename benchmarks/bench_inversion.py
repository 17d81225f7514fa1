"""Seconds per image of the optimisation-based inversion baseline (Mahendran & Vedaldi).

Usage::

    python -m benchmarks.bench_inversion --targets hog conv3 --images 8 --steps 200

For each target, times :func:`pipeline.inversion.invert` on ``--images`` centre crops of
scikit-image's photographs (one batch, random-weights CaffeNet for AlexNet layers) and prints
the wall-clock and process-CPU seconds per image and per image-step, the fraction of the
feature loss left (final / initial, mean over images), and the projection to ``--steps``
steps if fewer were timed (``--timed-steps``). The best of ``--repeats`` runs is kept: on a
shared machine the slower runs measure the neighbours, not the code. Torch's default thread
count is kept unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import skimage.data
import torch

from pipeline import alexnet
from pipeline.images import resize_center_crop
from pipeline.inversion import IMAGE_SIZE, InversionParams, feature_function, feature_loss, invert


def photographs(count: int) -> np.ndarray:
    """``(count, 256, 256, 3)`` uint8 centre crops of scikit-image's colour photographs."""
    photos = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
        skimage.data.immunohistochemistry(),
        skimage.data.hubble_deep_field(),
        skimage.data.retina(),
        skimage.data.coins(),
    ]
    crops = [
        resize_center_crop(p if p.ndim == 3 else np.stack([p] * 3, -1), IMAGE_SIZE) for p in photos
    ]
    return np.stack([crops[i % len(crops)] for i in range(count)])


def time_target(
    target: str, images: np.ndarray, params: InversionParams, repeats: int
) -> tuple[float, float, float]:
    """Best (wall, CPU) seconds of one :func:`invert` of all ``images``, and the loss left."""
    phi, size = feature_function(target)
    params = params.for_target(target)
    at = (IMAGE_SIZE - size) // 2
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 256, 256)
    with torch.no_grad():
        phi0 = phi(x[..., at : at + size, at : at + size])
    channels = 1 if target == "hog" else 3
    start = invert(
        phi, phi0, size=size, params=dataclasses.replace(params, steps=0), channels=channels
    )
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = invert(phi, phi0, size=size, params=params, channels=channels)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    with torch.no_grad():
        left = (feature_loss(phi(result), phi0) / feature_loss(phi(start), phi0)).mean().item()
    return min(walls), min(cpus), left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--targets", nargs="+", default=["hog", "conv3"], choices=["hog", *alexnet.LAYERS]
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=InversionParams().steps)
    parser.add_argument("--timed-steps", type=int, default=None, help="time fewer steps, project")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    timed = args.steps if args.timed_steps is None else args.timed_steps
    params = InversionParams(steps=timed)
    images = photographs(args.images)
    print(
        f"# {args.images} images per batch, {timed} steps timed, torch threads "
        f"{torch.get_num_threads()}; seconds per image at {args.steps} steps"
    )
    for target in args.targets:
        wall, cpu, left = time_target(target, images, params, args.repeats)
        per_step = wall / (args.images * timed)
        print(
            f"{target:6s} wall {per_step * args.steps:7.2f} s/image  cpu "
            f"{cpu / (args.images * timed) * args.steps:7.2f} s/image  "
            f"({per_step * 1e3:6.1f} ms/image-step; feature loss left {left:.3f} after {timed})",
            flush=True,
        )


if __name__ == "__main__":
    main()
