#!/usr/bin/env python
"""Store VLFeat's HOG, LBP and SIFT of a few photographs for ``tests/test_parity.py``.

    python scripts/make_vlfeat_refs.py            # write tests/data/vlfeat_refs.npz
    python scripts/make_vlfeat_refs.py --check    # recompute, compare, write nothing

The live comparisons with VLFeat (``tests/test_hog.py``, ``test_lbp.py``, ``test_sift.py``,
marked ``vlfeat``) run only where VLFeat is installed. This script runs VLFeat once on a
fixed input and stores its output, so that an install without VLFeat (pip only) still
tests parity with it. It calls VLFeat directly, not through ``pipeline/``:

- HOG: ``vl_hog`` through ``cyvlfeat.hog.hog(image, 8, variant="UoCTTI",
  n_orientations=9)`` on the RGB image as float32 in [0, 1] (uint8 / 255), the paper's
  setting (``extract.hog``);
- LBP: ``vl_lbp_process`` of ``libvl.so`` (cyvlfeat has no LBP) with the uniform mapping
  and 16-pixel cells (``extract.lbp``) on the grey image, row-major (``transposed = false``);
- SIFT: ``cyvlfeat.sift.sift`` with ``vl_sift``'s defaults as the paper uses them (3 levels
  per octave, first octave 0, peak threshold 0, edge threshold 10) and float descriptors,
  on the grey image: the call of the project's ``backend="vlfeat"``.

Grey is MATLAB's ``rgb2gray`` in float32: ``0.2989 R + 0.5870 G + 0.1140 B`` of the
float32 [0, 1] image, summed left to right.

Input: three 100 x 124 crops (not multiples of the HOG or LBP cell: partial cells on both
axes) of ``skimage.data`` photographs (astronaut, coffee, chelsea), plain slices, no
resizing. The file holds, besides the references, the uint8 images and the grey images
VLFeat was given, and the versions that made it (``cyvlfeat_version``,
``vlfeat_version``). Made with cyvlfeat 0.7.1 on VLFeat 0.9.21 (Debian
``libvlfeat-dev`` 0.9.21+full-1). About 0.3 MB.

Keys of ``tests/data/vlfeat_refs.npz``:

=====================  =====================  =========================================
key                    shape, dtype           what
=====================  =====================  =========================================
images                 (3, 100, 124, 3) u8    the RGB crops
names, tops, lefts     (3,)                   photograph and crop offset of each
grey                   (3, 100, 124) f32      what LBP and SIFT were given
hog                    (3, 31, 13, 16) f32    ``vl_hog``, channel first (D, h, w)
lbp                    (3, 58, 6, 7) f32      ``vl_lbp``, (58, h, w)
sift_frames            (K, 4) f32             cyvlfeat's ``(y, x, sigma, angle)``, K in all
sift_descriptors       (K, 128) f32           VLFeat's float descriptors (``512 v``)
sift_counts            (3,) i64               keypoints of each image, in order
hog_cell_size, ...     ()                     the parameters used
cyvlfeat_version, ...  () str                 versions
=====================  =====================  =========================================
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "vlfeat_refs.npz"

#: (photograph, top, left) of each 100 x 124 crop: a face, a cup's rim, a cat's head.
CROPS = (("astronaut", 40, 170), ("coffee", 150, 200), ("chelsea", 60, 130))
HEIGHT, WIDTH = 100, 124

HOG_CELL, HOG_ORIENTATIONS = 8, 9
LBP_CELL = 16
LBP_BINS = 58  # uniform mapping: 56 uniform codes, the two constant codes, the rest
VL_LBP_UNIFORM = 0  # VlLbpMappingType.VlLbpUniform (vl/lbp.h)
SIFT_ARGS = {"n_levels": 3, "first_octave": 0, "peak_thresh": 0.0, "edge_thresh": 10.0}
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # MATLAB rgb2gray


def crops() -> np.ndarray:
    """``(3, HEIGHT, WIDTH, 3)`` uint8: the fixed crops of :data:`CROPS`."""
    out = [
        getattr(skimage.data, name)()[top : top + HEIGHT, left : left + WIDTH, :3]
        for name, top, left in CROPS
    ]
    return np.ascontiguousarray(np.stack(out))  # (3, HEIGHT, WIDTH, 3)


def grey(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` float32 in [0, 1]: MATLAB's ``rgb2gray`` of ``(N, H, W, 3)`` uint8."""
    x = images.astype(np.float32) / np.float32(255)  # (N, H, W, 3)
    r, g, b = (np.float32(w) for w in GREY_WEIGHTS)
    return (r * x[..., 0] + g * x[..., 1] + b * x[..., 2]).astype(np.float32)


def libvl() -> ctypes.CDLL:
    """VLFeat's shared library with the LBP functions declared (``vl/lbp.h``)."""
    path = ctypes.util.find_library("vl") or "libvl.so.1"
    lib = ctypes.CDLL(path)
    size = ctypes.c_uint64  # vl_size on LP64
    lib.vl_get_version_string.restype = ctypes.c_char_p
    lib.vl_lbp_new.restype = ctypes.c_void_p
    lib.vl_lbp_new.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.vl_lbp_delete.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_get_dimension.restype = size
    lib.vl_lbp_get_dimension.argtypes = [ctypes.c_void_p]
    lib.vl_lbp_process.restype = None
    lib.vl_lbp_process.argtypes = [ctypes.c_void_p] * 3 + [size] * 3
    return lib


def vl_hog(images: np.ndarray) -> np.ndarray:
    """``(N, 31, h, w)`` float32: ``vl_hog`` (UoCTTI) of each uint8 RGB image."""
    from cyvlfeat.hog import hog

    out = []
    for image in images:
        x = image.astype(np.float32) / np.float32(255)  # (H, W, 3), im2single
        feats = hog(x, HOG_CELL, variant="UoCTTI", n_orientations=HOG_ORIENTATIONS)  # (h, w, D)
        out.append(np.asarray(feats, np.float32).transpose(2, 0, 1))
    return np.stack(out)


def vl_lbp(grey_images: np.ndarray) -> np.ndarray:
    """``(N, 58, H // 16, W // 16)`` float32: ``vl_lbp`` (uniform) of each grey image."""
    lib = libvl()
    handle = lib.vl_lbp_new(VL_LBP_UNIFORM, 0)
    assert handle, "vl_lbp_new returned NULL"
    try:
        assert lib.vl_lbp_get_dimension(handle) == LBP_BINS
        n, height, width = grey_images.shape
        out = np.zeros((n, LBP_BINS, height // LBP_CELL, width // LBP_CELL), np.float32)
        for i in range(n):
            image = np.ascontiguousarray(grey_images[i], dtype=np.float32)
            cells = np.zeros(out.shape[1:], np.float32)  # dimension x rows x columns
            lib.vl_lbp_process(
                handle, cells.ctypes.data, image.ctypes.data, width, height, LBP_CELL
            )
            out[i] = cells
    finally:
        lib.vl_lbp_delete(handle)
    return out


def vl_sift(grey_images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cyvlfeat's SIFT of each grey image: frames ``(y, x, sigma, angle)``, descriptors, counts."""
    from cyvlfeat.sift import sift

    frames, descriptors, counts = [], [], []
    for image in grey_images:
        f, d = sift(image, compute_descriptor=True, float_descriptors=True, **SIFT_ARGS)
        frames.append(np.asarray(f, np.float32).reshape(-1, 4))
        descriptors.append(np.asarray(d, np.float32).reshape(-1, 128))
        counts.append(len(frames[-1]))
    return np.concatenate(frames), np.concatenate(descriptors), np.array(counts, np.int64)


def references() -> dict[str, Any]:
    """Every array of the file (see the module docstring)."""
    images = crops()
    grey_images = grey(images)
    frames, descriptors, counts = vl_sift(grey_images)
    version = libvl().vl_get_version_string().decode()
    return {
        "images": images,
        "names": np.array([n for n, _, _ in CROPS]),
        "tops": np.array([t for _, t, _ in CROPS]),
        "lefts": np.array([left for _, _, left in CROPS]),
        "grey": grey_images,
        "hog": vl_hog(images),
        "lbp": vl_lbp(grey_images),
        "sift_frames": frames,
        "sift_descriptors": descriptors,
        "sift_counts": counts,
        "hog_cell_size": np.array(HOG_CELL),
        "hog_num_orientations": np.array(HOG_ORIENTATIONS),
        "lbp_cell_size": np.array(LBP_CELL),
        "sift_levels_per_octave": np.array(SIFT_ARGS["n_levels"]),
        "sift_first_octave": np.array(SIFT_ARGS["first_octave"]),
        "sift_peak_threshold": np.array(SIFT_ARGS["peak_thresh"]),
        "sift_edge_threshold": np.array(SIFT_ARGS["edge_thresh"]),
        "cyvlfeat_version": np.array(package_version("cyvlfeat")),
        "vlfeat_version": np.array(version),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT}")
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args(argv)
    refs = references()
    if args.check:
        with np.load(args.out) as stored:
            differ = [
                key
                for key, value in refs.items()
                if key not in stored or not np.array_equal(stored[key], value)
            ]
        print("differ: " + ", ".join(differ) if differ else f"{args.out}: unchanged")
        return 1 if differ else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **refs)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(refs)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
