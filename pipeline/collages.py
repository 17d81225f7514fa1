"""Dead-leaves collages of photographs: more varied training images from few photographs.

The embedded default has a few dozen photographs to train on, and its shallow-feature
decoders learnt those photographs (their colours, their layouts) rather than how features
map to image structure: on new photographs they scored no better than the training-mean
image (issue 13). A collage is a random crop of one training photograph covered, back to
front, by disks cut from random crops of random training photographs at random scales, the
"dead leaves" model of natural images (Matheron 1968; Lee, Mumford & Huang, IJCV 2001:
occluding objects with a power-law size distribution reproduce the scale-invariant
statistics of photographs). Every pixel is a photograph's pixel; what is new is the layout:
edges, occlusions and textures at every scale in arrangements no photograph repeats. A
project departure for data-starved runs (README, "Departures"); the paper trains on ImageNet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipeline.errors import ConfigError

__all__ = ["collage", "collage_path", "parse_collage_path"]

#: Disks per collage, and their radius range in pixels of a 256-pixel collage (scaled with
#: the size): sizes drawn from a density ~ r^-3, the dead-leaves law of scale invariance.
LEAVES = 30
RADIUS = (10.0, 128.0)
#: Side of a crop as a fraction of its photograph's shorter side (the background's, and the
#: source of each disk before it is resized to the disk).
CROP_SCALE = (0.3, 1.0)

_PREFIX = "collage:"


def collage_path(seed: int, photos: Sequence[str]) -> str:
    """The image-store path of a collage: ``collage:SEED:NAME,NAME,...`` (self-contained)."""
    return f"{_PREFIX}{seed}:{','.join(photos)}"


def parse_collage_path(path: str) -> tuple[int, list[str]] | None:
    """``(seed, photo names)`` of a :func:`collage_path`, or ``None`` for any other path."""
    if not path.startswith(_PREFIX):
        return None
    seed, _, names = path[len(_PREFIX) :].partition(":")
    if not seed.isdigit() or not names:
        raise ConfigError(f"{path!r} is not a collage path (collage:SEED:NAME,NAME,...)")
    return int(seed), names.split(",")


def _crop(
    photo: np.ndarray, rng: np.random.Generator, side: int, resize: Callable[..., np.ndarray]
) -> np.ndarray:
    """A random square crop of ``photo``, possibly mirrored, resized to ``side`` pixels with
    ``resize`` (:func:`pipeline.images.resize_center_crop`: the project's one resizing rule)."""
    h, w = photo.shape[:2]
    src = rng.uniform(*CROP_SCALE) * min(h, w)
    top, left = int(rng.uniform(0, h - src)), int(rng.uniform(0, w - src))
    part = photo[top : top + int(src), left : left + int(src)]
    if rng.random() < 0.5:
        part = part[:, ::-1]
    return resize(np.ascontiguousarray(part), side)


def collage(
    photos: Sequence[np.ndarray],
    seed: int,
    size: int = 256,
    *,
    resize: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """A dead-leaves collage of ``photos``.

    Parameters
    ----------
    photos : sequence of (H, W, 3) ndarray of uint8
        The photographs to cut from (the training split's: never a test photograph).
    seed : int
        Everything random (which photograph, where, how large) comes from this seed: the
        same seed and photographs give the same bytes.
    size : int
        Side of the collage.
    resize : callable
        ``resize(image, side)``: the project's one resizing rule,
        :func:`pipeline.images.resize_center_crop` (passed in, so that this module, which
        the training loader reads collage paths with, does not import the image sources).

    Returns
    -------
    (size, size, 3) ndarray of uint8
    """
    if not photos:
        raise ConfigError("a collage needs at least one photograph")
    rng = np.random.default_rng([seed, size])
    image = _crop(photos[int(rng.integers(len(photos)))], rng, size, resize)
    scale = size / 256.0
    r_min, r_max = RADIUS[0] * scale, RADIUS[1] * scale
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(LEAVES):
        # inverse CDF of a density ~ r^-3 on [r_min, r_max]
        u = rng.random()
        r = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
        cy, cx = rng.uniform(-r / 2, size + r / 2, 2)
        side = int(np.ceil(2 * r)) + 2
        disk = _crop(photos[int(rng.integers(len(photos)))], rng, side, resize)
        y0, x0 = int(cy - side / 2), int(cx - side / 2)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + side, size), min(x0 + side, size)
        if ye <= ys or xe <= xs:
            continue
        inside = (yy[ys:ye, xs:xe] - cy) ** 2 + (xx[ys:ye, xs:xe] - cx) ** 2 <= r * r
        image[ys:ye, xs:xe][inside] = disk[ys - y0 : ye - y0, xs - x0 : xe - x0][inside]
    return image
