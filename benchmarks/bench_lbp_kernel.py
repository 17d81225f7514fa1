"""Micro-benchmark: :func:`pipeline.features.lbp.lbp` against VLFeat's C code, one core.

Run from the repository root::

    python benchmarks/bench_lbp_kernel.py [--batch 64] [--repeats 20]

Prints images/s for ours on each backend (the numba kernels where numba is installed, the
numpy path; ``INVERT_KERNELS``) and for VLFeat (``lbp_vlfeat``) on 256×256 RGB photographs
from ``skimage.data`` (grey conversion included in both), their ratios, and a per-stage
profile of the numpy path. OpenCV is pinned to one thread here only (VLFeat is
single-threaded). Compilation is outside the timings (a warm-up call first).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from skimage import data
from skimage.transform import resize

from pipeline.features import lbp as lbp_module
from pipeline.features.base import numba_available


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
    backends = ["numba", "numpy"] if numba_available() else ["numpy"]

    def ours(backend: str) -> Callable[[], object]:
        def run() -> object:
            os.environ["INVERT_KERNELS"] = backend  # this script only
            return lbp_module.lbp(images)

        return run

    # alternate the contenders so that load from other processes hits all alike; keep the best
    best = dict.fromkeys([*backends, "vlfeat"], float("inf"))
    calls = {**{b: ours(b) for b in backends}, "vlfeat": lambda: lbp_module.lbp_vlfeat(images)}
    for call in calls.values():
        call()  # warm up: numba compiles (or loads its cache), tables, library load
    for _ in range(args.repeats):
        for name, call in calls.items():
            best[name] = min(best[name], best_time(call, 1))
    reference = lbp_module.lbp_vlfeat(images)
    n = len(images)
    print(f"batch {n} x 256x256 RGB uint8, 1 thread, best of {args.repeats}")
    for name in backends:
        diff = float(np.abs(np.asarray(ours(name)()) - reference).max())
        print(
            f"ours ({name:5s}): {n / best[name]:8.0f} images/s ({1e3 * best[name] / n:.3f} "
            f"ms/image), {best['vlfeat'] / best[name]:.2f}x VLFeat, max |ours - vlfeat| = "
            f"{diff:.2e}"
        )
    vlfeat_ms = 1e3 * best["vlfeat"] / n
    print(f"vlfeat      : {n / best['vlfeat']:8.0f} images/s ({vlfeat_ms:.3f} ms/image)")
    os.environ["INVERT_KERNELS"] = "numpy"

    # per-stage profile of the numpy path on one chunk, the steps of _lbp_numpy()'s loop
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
