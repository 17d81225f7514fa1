#!/usr/bin/env python
"""Regenerate the golden outputs that ``tests/test_golden.py`` holds the code to.

    python scripts/make_golden.py            # rewrite tests/data/golden.{npz,json}
    python scripts/make_golden.py --check    # compare only, write nothing

Every extractor, every decoder family and the image renderer carry an integer version
(``Extractor.version`` in ``pipeline/features/``, ``FAMILY_VERSIONS`` in
``pipeline/decoders.py``, ``RENDER_VERSION`` in ``pipeline/images.py``) that must be bumped
whenever what they compute changes: feature stores, checkpoints and image stores record it,
so that what older code made is refused or rebuilt instead of mixed in. This script stores
what each one computes from a fixed input, so that the test can tell an output change that
came without a bump.

Entries (``golden.json`` describes each one):

- ``extractor/NAME`` for every registered feature: the features of a fixed batch of two
  256×256 photographs (plain slices of ``skimage.data``, independent of the code under
  test); AlexNet layers from the seeded random network ``random:0`` in float32.
- ``decoder/TARGET`` for every decoder target, grouped by family: the output of
  ``decoders.build(TARGET, width=0.125)`` built after ``torch.manual_seed(0)``, fed a
  fixed ``numpy`` normal input of ``(1, *input_shape(TARGET))``.
- ``render/NAME``: the pixels ``pipeline.images._render`` makes of two fixed records of the
  ``sample`` source (a rectangular photograph shrunk, a fractional crop enlarged and
  mirrored): every branch of crop, flip and resize (decoding files is not covered).

Storage (``tests/data/golden.npz`` under 2 MB): float32 outputs as computed; the largest
maps (CONV1–CONV4 features, decoder images) keep every ``stride``-th row and column only.
The decoders' stride 5 is odd, so both phases of every stride-2 upconv are sampled.
``golden.json`` records, per entry, the version, the shapes, the stride, the tolerance and
the sha256 of the stored array's bytes.

Regenerating keeps the stored array of an entry whose version is unchanged and whose new
output matches within tolerance (no churn from float noise), and **refuses** (exit 2) to
overwrite one that changed without a version bump unless ``--force`` says the change is
not the code's (a new fixed input).

Tolerances were measured by rerunning with every SIMD path turned off
(``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OPENCV_CPU_DISABLE=AVX2,AVX,FMA3
NPY_DISABLE_CPU_FEATURES="AVX512F AVX2 FMA3 ..." OMP_NUM_THREADS=1``), a stand-in for another
CPU: float outputs moved by at most 3e-6 of their scale (fc8, after 8 layers), SIFT had 20
descriptor entries rounded the other way, rendered pixels did not move.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_NPZ = ROOT / "tests" / "data" / "golden.npz"
GOLDEN_JSON = ROOT / "tests" / "data" / "golden.json"
REGENERATE = "python scripts/make_golden.py"
FORMAT = 1

#: Parameters the extractors run with (recorded in the json; defaults where absent).
ALEXNET_PARAMS: dict[str, Any] = {"arch": "caffenet", "weights": "random:0", "dtype": "float32"}
FEATURE_PARAMS: dict[str, dict[str, Any]] = {"sift": {"backend": "opencv"}}

#: Spatial stride of the stored features; 1 (all of it) where absent.
FEATURE_STRIDE: dict[str, int] = {"conv1": 2, "conv2": 2, "conv3": 2, "conv4": 2}

DECODER_WIDTH = 0.125  # hidden layers floor at 8 channels: a few ms per forward
DECODER_SEED = 0
DECODER_STRIDE = 5  # odd: samples both phases of the stride-2 upconvs

RENDER_SIZE, RENDER_MIN_SIZE = 256, 32  # PrepareParams' defaults, written out


@dataclass(frozen=True)
class Tolerance:
    """How far a recomputed output may be from the golden one.

    A value passes when ``|current - golden| <= atol_abs + atol_rel * scale``, ``scale``
    being the largest ``|golden|`` of the entry; at most ``max_mismatches`` values may fail.
    """

    atol_rel: float = 0.0
    atol_abs: float = 0.0
    max_mismatches: int = 0
    why: str = ""

    def atol(self, scale: float) -> float:
        """The absolute tolerance for an entry whose largest golden magnitude is ``scale``."""
        return self.atol_abs + self.atol_rel * scale

    def rules(self) -> dict[str, Any]:
        return {
            "atol_rel": self.atol_rel,
            "atol_abs": self.atol_abs,
            "max_mismatches": self.max_mismatches,
        }


#: Float outputs: the same code on another CPU (other SIMD width, FMA or not, other BLAS
#: blocking) moves float32 results by up to ~3e-6 of their scale (measured, module
#: docstring), even through AlexNet's 8 layers or a decoder's 14; 1e-4 of the scale is 30x
#: above that, and below what a change of the computation does (a leaky-ReLU slope of 0.201
#: instead of 0.2 moves decoder outputs by 2.6e-4..4.5e-4 of their scale; a changed
#: constant, padding, interpolation or layer by percent).
FLOAT_TOLERANCE = Tolerance(
    atol_rel=1e-4,
    why="float32 noise across CPUs is <=3e-6 of the output's scale; real changes are larger",
)
#: SIFT keeps a threshold decision per keypoint (3x3x3 DoG extremum with peak threshold 0,
#: edge test) and OpenCV rounds descriptor entries to 1/512: float noise can flip a
#: borderline keypoint (one 133-value cell) or one rounding. Four cells' worth of values may
#: differ (20 values did with SIMD off); a change to the detector, descriptor or cell layout
#: moves far more (MATLAB's grey weights rounded to Rec. 601 already move 1056 values).
SIFT_TOLERANCE = Tolerance(
    atol_rel=1e-4,
    max_mismatches=4 * 133,
    why="a borderline keypoint or descriptor rounding may flip across CPUs: 4 cells may differ",
)
#: Rendered uint8 pixels: OpenCV's resize may round a pixel the other way on another CPU.
RENDER_TOLERANCE = Tolerance(
    atol_abs=1.0,
    why="uint8 pixels: +-1 for a rounding of cv2.resize on another CPU, nothing more",
)


@dataclass(frozen=True)
class Entry:
    """One golden output: what computes it, and which version vouches for it."""

    name: str
    kind: str  # "extractor", "decoder" or "render"
    version: int
    version_lives: str  # where to bump ``version`` (the failure message names it)
    params: dict[str, Any]
    stride: int
    tolerance: Tolerance
    compute: Callable[[], np.ndarray]  # the full output

    def spec(self) -> dict[str, Any]:
        """What must be equal for a golden output to be comparable (besides the version)."""
        return {
            "kind": self.kind,
            "params": self.params,
            "stride": self.stride,
            "tolerance": self.tolerance.rules(),
        }


# -- the fixed input ----------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def input_images() -> np.ndarray:
    """(2, 256, 256, 3) uint8: every other pixel of ``astronaut``, the centre of ``coffee``."""
    import skimage.data

    astronaut = skimage.data.astronaut()[::2, ::2]  # (512, 512) -> (256, 256)
    coffee = skimage.data.coffee()[72:328, 172:428]  # the central 256x256 of (400, 600)
    images = np.ascontiguousarray(np.stack([astronaut, coffee]), dtype=np.uint8)
    images.setflags(write=False)
    return images


INPUT_DESCRIPTION = "skimage.data: astronaut()[::2, ::2] and coffee()[72:328, 172:428]"


def digest(array: np.ndarray) -> str:
    """sha256 of the array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def subsample(array: np.ndarray, stride: int) -> np.ndarray:
    """Every ``stride``-th element of the last two (spatial) axes; the array if stride 1."""
    if stride == 1:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(array[..., ::stride, ::stride])


# -- what is computed ---------------------------------------------------------------------
def _feature(name: str, params: dict[str, Any]) -> np.ndarray:
    from pipeline import features

    return features.extract(name, input_images(), **params)


def _decoder(target: str) -> np.ndarray:
    import torch

    from pipeline import decoders

    torch.manual_seed(DECODER_SEED)
    model = decoders.build(target, width=DECODER_WIDTH).eval()
    rng = np.random.default_rng(DECODER_SEED)
    x = rng.standard_normal((1, *decoders.input_shape(target)), dtype=np.float32)
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


#: Records of the ``sample`` source: (name, ImageRecord fields). ``rocket`` (427x640, no
#: crop): shrunk with area interpolation and centre-cropped; ``chelsea``: a fractional
#: crop (rounded to 201 px), mirrored, enlarged bicubically.
RENDER_RECORDS: dict[str, dict[str, Any]] = {
    "rocket": {"id": "rocket", "path": "skimage:rocket", "split": "train"},
    "chelsea_crop_flip": {
        "id": "chelsea/train/00000",
        "path": "skimage:chelsea",
        "split": "train",
        "crop": [30.4, 120.6, 200.7],
        "flip": True,
    },
}


def _render(fields: dict[str, Any]) -> np.ndarray:
    from pipeline.images import ImageRecord, _render

    record = ImageRecord(**{**fields, "crop": tuple(fields["crop"]) if "crop" in fields else None})
    return _render(record, RENDER_SIZE, RENDER_MIN_SIZE)[0]


def _module_file(obj: Any) -> str:
    """The file defining ``obj``'s module, relative to the repository (a package's __init__)."""
    name = getattr(obj, "__module__", None) or "pipeline.features"
    path = name.replace(".", "/")
    return f"{path}/__init__.py" if getattr(sys.modules[name], "__path__", None) else f"{path}.py"


def entries() -> list[Entry]:
    """Every golden entry of the current code (cheap: nothing is computed here)."""
    from pipeline import decoders, features
    from pipeline.images import RENDER_VERSION

    out: list[Entry] = []
    for name in features.names():
        ext = features.get(name)
        params = dict(ALEXNET_PARAMS if ext.family == "alexnet" else FEATURE_PARAMS.get(name, {}))
        out.append(
            Entry(
                name=f"extractor/{name}",
                kind="extractor",
                version=ext.version,
                version_lives=f"version= of the {name!r} Extractor in {_module_file(ext.compute)}",
                params=params,
                stride=FEATURE_STRIDE.get(name, 1),
                tolerance=SIFT_TOLERANCE if name == "sift" else FLOAT_TOLERANCE,
                compute=functools.partial(_feature, name, params),
            )
        )
    for family, targets in decoders.FAMILIES.items():
        for target in targets:
            out.append(
                Entry(
                    name=f"decoder/{target}",
                    kind="decoder",
                    version=decoders.version(target),
                    version_lives=f"FAMILY_VERSIONS[{family!r}] in pipeline/decoders.py",
                    params={"family": family, "width": DECODER_WIDTH, "seed": DECODER_SEED},
                    stride=DECODER_STRIDE,
                    tolerance=FLOAT_TOLERANCE,
                    compute=functools.partial(_decoder, target),
                )
            )
    for name, fields in RENDER_RECORDS.items():
        out.append(
            Entry(
                name=f"render/{name}",
                kind="render",
                version=RENDER_VERSION,
                version_lives="RENDER_VERSION in pipeline/images.py",
                params={"record": fields, "size": RENDER_SIZE, "min_size": RENDER_MIN_SIZE},
                stride=1,
                tolerance=RENDER_TOLERANCE,
                compute=functools.partial(_render, fields),
            )
        )
    return out


# -- comparing ----------------------------------------------------------------------------
def scale_of(array: np.ndarray) -> float:
    """Largest magnitude of a golden array (0 for an empty or all-zero one)."""
    return float(np.max(np.abs(array.astype(np.float64)))) if array.size else 0.0


def compare(
    golden: np.ndarray, current: np.ndarray, atol: float, max_mismatches: int = 0
) -> str | None:
    """Why ``current`` does not match ``golden`` within ``atol``, or None when it does.

    Parameters
    ----------
    golden, current : ndarray
        The stored output and the recomputed one (subsampled alike).
    atol : float
        Largest absolute difference a value may have; NaN never passes.
    max_mismatches : int
        How many values may exceed ``atol``.

    Returns
    -------
    str or None
        A one-line description of the difference.
    """
    if golden.shape != current.shape:
        return f"shape {current.shape}, golden {golden.shape}"
    if golden.dtype != current.dtype:
        return f"dtype {current.dtype}, golden {golden.dtype}"
    diff = np.abs(current.astype(np.float64) - golden.astype(np.float64))
    bad = ~(diff <= atol)  # NaN counts as bad
    count = int(np.count_nonzero(bad))
    if count <= max_mismatches:
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    largest = float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan")
    return (
        f"{count} of {diff.size} values differ by more than {atol:.3g} "
        f"({max_mismatches} allowed), largest difference {largest:.4g}, first at index "
        f"{first}: {current[first].item()!r} vs golden {golden[first].item()!r}"
    )


def check_entry(
    entry: Entry, meta: dict[str, Any] | None, golden: np.ndarray | None, output: np.ndarray
) -> str | None:
    """The failure message for ``entry``, or None if it passes.

    Parameters
    ----------
    entry : Entry
        The entry as the current code defines it (its version, spec, tolerance).
    meta : dict or None
        Its record in ``golden.json``; None when absent.
    golden : ndarray or None
        Its stored array from ``golden.npz``; None when absent.
    output : ndarray
        The full output the current code computes (``entry.compute()``).

    Returns
    -------
    str or None
        "stale" when the versions (or the script's settings) differ, "output changed
        without a version bump" when the versions agree but the outputs do not.
    """
    if meta is None or golden is None:
        return f"{entry.name}: has no golden output yet; run {REGENERATE}"
    if meta["version"] != entry.version:
        return (
            f"{entry.name}: the golden file is stale: it holds version {meta['version']}, the "
            f"code is at version {entry.version} ({entry.version_lives}); run {REGENERATE} "
            "and commit tests/data/golden.npz and golden.json"
        )
    if meta["spec"] != entry.spec():
        return (
            f"{entry.name}: the golden file is stale: recorded with {meta['spec']}, the "
            f"script now uses {entry.spec()}; run {REGENERATE}"
        )
    atol = entry.tolerance.atol(float(meta["scale"]))
    if list(output.shape) != meta["full_shape"]:
        problem: str | None = f"shape {output.shape}, golden {tuple(meta['full_shape'])}"
    else:
        problem = compare(
            golden, subsample(output, entry.stride), atol, entry.tolerance.max_mismatches
        )
    if problem is None:
        return None
    return (
        f"{entry.name}: output changed without a version bump ({problem}): bump "
        f"{entry.version_lives} and run {REGENERATE}"
    )


# -- the files ----------------------------------------------------------------------------
def load_golden(
    npz: Path = GOLDEN_NPZ, meta: Path = GOLDEN_JSON
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The json record and the stored arrays (empty when the files are absent)."""
    if not meta.is_file() or not npz.is_file():
        return {"entries": {}}, {}
    record = json.loads(meta.read_text())
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return record, arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed member times: same arrays, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]))
            zf.writestr(info, member.getvalue(), compresslevel=9)
    path.write_bytes(buffer.getvalue())


def _dumps(value: Any, depth: int = 0) -> str:
    """Indented json with lists (shapes, crops) on one line."""
    if not isinstance(value, dict) or not value:
        return json.dumps(value)
    pad = " " * (depth + 1)
    items = ",\n".join(f"{pad}{json.dumps(k)}: {_dumps(v, depth + 1)}" for k, v in value.items())
    return "{\n" + items + "\n" + " " * depth + "}"


def _environment() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for package in ("numpy", "torch", "opencv-python-headless", "scikit-image"):
        try:
            out[package] = package_version(package)
        except Exception:  # not installed under that name
            out[package] = "?"
    return out


def _record(entry: Entry, full_shape: tuple[int, ...], stored: np.ndarray) -> dict[str, Any]:
    scale = scale_of(stored)
    return {
        "version": entry.version,
        "version_lives": entry.version_lives,
        "spec": entry.spec(),
        "full_shape": list(full_shape),
        "shape": list(stored.shape),
        "dtype": str(stored.dtype),
        "scale": scale,
        "tolerance": {
            **entry.tolerance.rules(),
            "atol": entry.tolerance.atol(scale),
            "why": entry.tolerance.why,
        },
        "sha256": digest(stored),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite entries that changed without a version bump (only for changes that "
        "are not the code's, such as a new fixed input)",
    )
    args = parser.parse_args(argv)

    old, old_arrays = load_golden()
    new_entries: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    refused: list[str] = []
    problems = 0
    for entry in entries():
        full = entry.compute()
        stored = subsample(full, entry.stride)
        meta = old["entries"].get(entry.name)
        problem = check_entry(entry, meta, old_arrays.get(entry.name), full)
        same_version = meta is not None and meta["version"] == entry.version
        problems += problem is not None
        if problem is None and meta is not None:
            stored = old_arrays[entry.name]  # unchanged within tolerance: keep the old bytes
            print(f"  unchanged  {entry.name}")
        elif problem is not None and same_version and "without a version bump" in problem:
            print(f"  CHANGED    {problem}")
            if not args.force:
                refused.append(entry.name)
        else:
            print(f"  {'new' if meta is None else 'updated':10s} {problem}")
        new_entries[entry.name] = _record(entry, full.shape, stored)
        arrays[entry.name] = stored
    gone = sorted(set(old["entries"]) - set(new_entries))
    for name in gone:
        print(f"  removed    {name}")
    if args.check:
        return 1 if problems or gone else 0
    if refused:
        print(
            f"refusing to overwrite {len(refused)} entries that changed without a version bump: "
            "bump their versions (named above), or pass --force if the change is not the code's",
            file=sys.stderr,
        )
        return 2
    images = input_images()
    record = {
        "format": FORMAT,
        "regenerate": REGENERATE,
        "input": {
            "description": INPUT_DESCRIPTION,
            "shape": list(images.shape),
            "dtype": str(images.dtype),
            "sha256": digest(images),
        },
        "made_with": _environment(),
        "entries": new_entries,
    }
    text = _dumps(record) + "\n"
    GOLDEN_NPZ.parent.mkdir(parents=True, exist_ok=True)
    _write_npz(GOLDEN_NPZ, arrays)
    GOLDEN_JSON.write_text(text)
    size = GOLDEN_NPZ.stat().st_size
    print(f"wrote {GOLDEN_NPZ.relative_to(ROOT)} ({size / 1e6:.2f} MB) and {GOLDEN_JSON.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
