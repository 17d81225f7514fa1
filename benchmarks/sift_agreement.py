"""How closely the ``opencv`` SIFT backend reproduces VLFeat, and how fast it is.

Run ``python benchmarks/sift_agreement.py`` (needs cyvlfeat). On photographs from
``skimage.data`` resized to ``--size`` pixels it prints, per image and overall:

* recall: the fraction of VLFeat's keypoints that the ``opencv`` backend finds, a keypoint
  being found where ours lies within 1.5 px at a scale within 20 %
  (:func:`pipeline.features.sift_agreement.keypoint_agreement`);
* the median cosine similarity of the descriptors of matched keypoints (match = the
  nearest keypoint meeting the criteria);

then images per second of :func:`pipeline.features.sift.sift` with each backend and of
cyvlfeat's ``sift`` alone, single-threaded (``cv2.setNumThreads(1)`` during the timing only).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
import skimage.data
from skimage.transform import resize

from pipeline.features.base import to_grey
from pipeline.features.sift import SiftParams, keypoints, sift
from pipeline.features.sift_agreement import keypoint_agreement

#: Photographs shipped with scikit-image (no download needed).
IMAGES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "immunohistochemistry",
    "hubble_deep_field",
    "clock",
    "grass",
    "brick",
)


def load_rgb(name: str, size: int) -> np.ndarray:
    """``skimage.data.<name>()`` resized (anti-aliased) to ``size`` x ``size``, RGB uint8."""
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = resize(image[..., :3], (size, size), anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def images_per_second(fn: Callable[[], object], n_images: int, repeats: int) -> float:
    """Best of ``repeats`` timings of ``fn`` (which processes ``n_images``), single-threaded."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        fn()  # warm-up
        best = min(_seconds(fn) for _ in range(repeats))
    finally:
        cv2.setNumThreads(threads)
    return n_images / best


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timing repetitions (best kept)")
    args = parser.parse_args(argv)
    try:
        from cyvlfeat.sift import sift as cy_sift
    except ImportError:
        print("cyvlfeat is not installed: nothing to compare against", file=sys.stderr)
        return 1

    ours, ref = SiftParams(), SiftParams(backend="vlfeat")
    batch = np.stack([load_rgb(name, args.size) for name in IMAGES])  # (N, S, S, 3) uint8
    grey = to_grey(batch)  # (N, S, S) float32

    print(f"{'image':<22}{'VLFeat kp':>10}{'ours kp':>9}{'recall':>8}{'cosine':>8}")
    found = total = 0
    cosines = []
    for name, image in zip(IMAGES, grey):
        ref_frames, ref_desc = keypoints(image, ref)
        frames, desc = keypoints(image, ours)
        agreement = keypoint_agreement(ref_frames, ref_desc, frames, desc)
        found += agreement.n_found
        total += agreement.n_reference
        cosines.append(agreement.median_cosine)
        print(
            f"{name:<22}{len(ref_frames):>10}{len(frames):>9}"
            f"{agreement.recall:>8.3f}{agreement.median_cosine:>8.3f}"
        )
    print(f"{'all':<22}{total:>10}{'':>9}{found / total:>8.3f}{np.median(cosines):>8.3f}")
    print("(all: pooled recall; median of the per-image median cosines)")

    n = len(batch)
    print(f"\nimages/s at {args.size}x{args.size}, single thread, best of {args.repeats}:")
    speed_ours = images_per_second(lambda: sift(batch, ours), n, args.repeats)
    speed_ref = images_per_second(lambda: sift(batch, ref), n, args.repeats)
    speed_cy = images_per_second(
        lambda: [
            cy_sift(
                g,
                n_levels=3,
                first_octave=0,
                peak_thresh=0,
                edge_thresh=10,
                compute_descriptor=True,
            )
            for g in grey
        ],
        n,
        args.repeats,
    )
    print(f"  sift(backend='opencv')    {speed_ours:7.1f}")
    print(f"  sift(backend='vlfeat')    {speed_ref:7.1f}")
    print(f"  cyvlfeat.sift.sift alone  {speed_cy:7.1f}")
    print(f"  opencv / cyvlfeat         {speed_ours / speed_cy:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
