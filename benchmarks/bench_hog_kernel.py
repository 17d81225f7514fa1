"""Micro-benchmark: our HOG (:func:`pipeline.features.hog.hog`) against VLFeat's, one core.

Times both on the same batch of 256×256 RGB crops of ``skimage.data`` photographs, with
torch limited to one thread (VLFeat's ``vl_hog`` is single-threaded), alternating the
contenders so that a busy machine slows all alike; prints the best and the median of the
repeats. Ours runs on each backend (``INVERT_KERNELS``: the numba kernel where numba is
installed, and the torch path), after a warm-up call (numba's compilation is not timed).

    python benchmarks/bench_hog_kernel.py [--batch 64] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import skimage.data
import torch

from pipeline.features.base import numba_available
from pipeline.features.hog import hog, hog_vlfeat


def photographs(batch: int, size: int = 256) -> np.ndarray:
    """``batch`` RGB crops ``(batch, size, size, 3) uint8`` of four skimage photographs."""
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    sources.append(skimage.data.rocket())
    crops = []
    for i in range(batch):
        image = sources[i % len(sources)]
        y = (17 * i) % (image.shape[0] - size + 1)
        x = (29 * i) % (image.shape[1] - size + 1)
        crops.append(image[y : y + size, x : x + size])
    return np.stack(crops)


def seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for ours")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # this script only; the library never sets it
    images = photographs(args.batch)
    reference = hog_vlfeat(images)
    backends = ["numba", "numpy"] if numba_available() else ["numpy"]

    def ours(backend: str) -> Callable[[], object]:
        def run() -> object:
            os.environ["INVERT_KERNELS"] = backend  # this script only
            return hog(images)

        return run

    calls = {**{f"ours-{b}": ours(b) for b in backends}, "vlfeat": lambda: hog_vlfeat(images)}
    for name in backends:
        diff = np.abs(np.asarray(ours(name)()) - reference).max()  # also the warm-up
        print(f"max |ours ({name}) - vlfeat| = {diff:.2e} on {images.shape}")

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            runs[name].append(seconds(call))
    for clock, i in (("wall", 0), ("cpu", 1)):
        rate = {}
        for name, times in runs.items():
            t = [run[i] for run in times]
            rate[name] = (args.batch / min(t), args.batch / statistics.median(t))
            best, median = rate[name]
            print(f"{clock:>4} {name:>11}: {best:7.1f} images/s best, {median:7.1f} median")
        for name in calls:
            if name != "vlfeat":
                print(
                    f"{clock:>4} {name:>11} / vlfeat: {rate[name][0] / rate['vlfeat'][0]:.2f}x "
                    f"best, {rate[name][1] / rate['vlfeat'][1]:.2f}x median"
                )
    print(f"(ours on {args.threads} torch thread(s); VLFeat is single-threaded)")


if __name__ == "__main__":
    main()
