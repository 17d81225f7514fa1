"""Micro-benchmark: :func:`pipeline.features.lbp.lbp` against VLFeat's C code, one core.

Run from the repository root::

    python benchmarks/bench_lbp_kernel.py [--batch 64] [--repeats 20]

Prints images/s for ours and for VLFeat (``lbp_vlfeat``) on 256×256 RGB photographs from
``skimage.data`` (grey conversion included in both), their ratio, and a per-stage profile of
ours. OpenCV is pinned to one thread here only (VLFeat is single-threaded).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage import data
from skimage.transform import resize

from pipeline.features import lbp as lbp_module


def photographs(n: int) -> np.ndarray:
    """``n`` 256×256 RGB uint8 crops and resizes of skimage's colour photographs."""
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    tiles = []
    for i in range(n):
        image = sources[i % len(sources)]
        shrink = 1 + (i // len(sources)) % 4  # crops of several scales, resized to 256
        side = min(image.shape[:2]) // shrink
        top = (i * 37) % (image.shape[0] - side + 1)
        left = (i * 53) % (image.shape[1] - side + 1)
        crop = image[top : top + side, left : left + side]
        tiles.append((resize(crop, (256, 256), anti_aliasing=True) * 255).round().astype(np.uint8))
    return np.stack(tiles)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, after one warm-up call."""
    fn()  # warm up (tables, library load, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # benchmark only: single-core comparison with VLFeat

    images = photographs(args.batch)
    torch.set_num_threads(1)  # benchmark only: lbp() never changes torch's settings
    # alternate the two so that load from other processes hits both alike; keep the best
    ours, ref = float("inf"), float("inf")
    lbp_module.lbp(images), lbp_module.lbp_vlfeat(images)  # warm up
    for _ in range(args.repeats):
        ours = min(ours, best_time(lambda: lbp_module.lbp(images), 1))
        ref = min(ref, best_time(lambda: lbp_module.lbp_vlfeat(images), 1))
    diff = float(np.abs(lbp_module.lbp(images) - lbp_module.lbp_vlfeat(images)).max())
    n = len(images)
    print(f"batch {n} x 256x256 RGB uint8, 1 thread, best of {args.repeats}")
    print(f"ours   : {n / ours:8.0f} images/s ({1e3 * ours / n:.3f} ms/image)")
    print(f"vlfeat : {n / ref:8.0f} images/s ({1e3 * ref / n:.3f} ms/image)")
    print(f"ratio  : {ref / ours:.2f}x   max |ours - vlfeat| = {diff:.2e}")

    # per-stage profile of ours on one chunk, the steps of lbp()'s loop
    height, width = images.shape[1:3]
    chunk = max(1, lbp_module._CHUNK_PIXELS // (height * width))
    plan = lbp_module._make_plan(height, width, 16, chunk)
    offsets = lbp_module.uniform_lbp_table().astype(np.int32) * np.int32(plan.n_blocks)
    planes = np.zeros((8, -(-chunk * height * width // 8) * 8), dtype=np.bool_)
    part = images[:chunk]
    grey = lbp_module._grey(part)
    slots = lbp_module._codes(grey, width, offsets, planes)
    index = np.empty(slots.size, dtype=np.int64)
    size = chunk * lbp_module.N_BINS * plan.n_blocks

    def make_index() -> None:
        torch.from_numpy(index).copy_(torch.from_numpy(slots))
        np.add(index, plan.index, out=index)

    def scatter() -> list[np.ndarray]:
        return [
            torch.zeros(size, dtype=torch.int64).scatter_add_(0, torch.from_numpy(index), w).numpy()
            for w in plan.weights
        ]

    make_index()
    sums = scatter()
    cells = lbp_module._cells([x.copy() for x in sums], plan, chunk)
    copies = best_time(lambda: [x.copy() for x in sums], 50)
    stages: dict[str, Callable[[], object]] = {
        "grey": lambda: lbp_module._grey(part),
        "codes": lambda: lbp_module._codes(grey, width, offsets, planes),
        "index": make_index,
        "scatter": scatter,
        "cells": lambda: lbp_module._cells([x.copy() for x in sums], plan, chunk),
        "normalise": lambda: lbp_module._normalise(cells.copy(), 16),
    }
    print(f"per stage, chunk of {chunk}, data in cache (best of 50):")
    for name, fn in stages.items():
        t = best_time(fn, 50) - (copies if name == "cells" else 0.0)
        print(f"  {name:10s} {1e3 * t / chunk:.3f} ms/image")


if __name__ == "__main__":
    main()
