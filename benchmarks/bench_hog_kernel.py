"""Micro-benchmark: our HOG (:func:`pipeline.features.hog.hog`) against VLFeat's, one core.

Times both on the same batch of 256×256 RGB crops of ``skimage.data`` photographs, with
torch limited to one thread (VLFeat's ``vl_hog`` is single-threaded), alternating the two
so that a busy machine slows both alike; prints the best and the median of the repeats.

    python benchmarks/bench_hog_kernel.py [--batch 64] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import skimage.data
import torch

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
    ours = hog(images)
    reference = hog_vlfeat(images)
    print(f"max |ours - vlfeat| = {np.abs(ours - reference).max():.2e} on {images.shape}")

    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "vlfeat": []}
    for _ in range(args.repeats):
        runs["ours"].append(seconds(lambda: hog(images)))
        runs["vlfeat"].append(seconds(lambda: hog_vlfeat(images)))
    for clock, i in (("wall", 0), ("cpu", 1)):
        rate = {}
        for name, times in runs.items():
            t = [run[i] for run in times]
            rate[name] = (args.batch / min(t), args.batch / statistics.median(t))
            best, median = rate[name]
            print(f"{clock:>4} {name:>6}: {best:7.1f} images/s best, {median:7.1f} median")
        print(
            f"{clock:>4}  ratio: {rate['ours'][0] / rate['vlfeat'][0]:.2f}x best, "
            f"{rate['ours'][1] / rate['vlfeat'][1]:.2f}x median"
        )
    print(f"(ours on {args.threads} torch thread(s); VLFeat is single-threaded)")


if __name__ == "__main__":
    main()
