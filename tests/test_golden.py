"""Golden outputs: code whose output changes must bump its version.

Every extractor (``Extractor.version``), decoder family (``decoders.FAMILY_VERSIONS``) and the
image renderer (``images.RENDER_VERSION``) is recomputed on a fixed input and compared with
``tests/data/golden.npz``. Same version, other output: the change came without a bump. Other
version: the golden file is stale. ``scripts/make_golden.py`` defines the entries, the
tolerances (and why), and regenerates the files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pipeline import decoders

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_golden.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden", SCRIPT)
    assert spec is not None and spec.loader is not None, SCRIPT
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


golden: Any = _load_script()
META, ARRAYS = golden.load_golden()
ENTRIES = {entry.name: entry for entry in golden.entries()}
REGENERATE = golden.REGENERATE


def _meta(name: str) -> dict[str, Any]:
    assert name in META["entries"], f"{name}: has no golden output yet; run {REGENERATE}"
    return META["entries"][name]


# -- the golden files ---------------------------------------------------------------------
def test_golden_files_exist_and_digests_match() -> None:
    assert golden.GOLDEN_NPZ.is_file() and golden.GOLDEN_JSON.is_file(), (
        f"no golden files; run {REGENERATE}"
    )
    assert META["format"] == golden.FORMAT, f"golden.json of another format; run {REGENERATE}"
    assert sorted(ARRAYS) == sorted(META["entries"]), (
        f"golden.npz and golden.json list other entries; run {REGENERATE}"
    )
    for name, meta in META["entries"].items():
        array = ARRAYS[name]
        assert list(array.shape) == meta["shape"], name
        assert str(array.dtype) == meta["dtype"], name
        assert golden.digest(array) == meta["sha256"], (
            f"{name}: golden.npz does not hold the array golden.json describes; run {REGENERATE}"
        )


def test_golden_files_are_compact() -> None:
    assert golden.GOLDEN_NPZ.stat().st_size < 2_000_000


def test_fixed_input_is_unchanged() -> None:
    images = golden.input_images()
    assert images.shape == (2, 256, 256, 3) and images.dtype == np.uint8
    assert golden.digest(images) == META["input"]["sha256"], (
        f"the fixed input ({META['input']['description']}) is not what the golden outputs were "
        f"made from (another scikit-image?); check it and run {REGENERATE} --force"
    )


def test_every_entry_has_a_golden_output() -> None:
    missing = sorted(set(ENTRIES) - set(META["entries"]))
    gone = sorted(set(META["entries"]) - set(ENTRIES))
    assert not missing, f"no golden output for {missing}; run {REGENERATE}"
    assert not gone, f"the golden file is stale: {gone} are no longer computed; run {REGENERATE}"


def test_every_extractor_and_decoder_target_is_covered() -> None:
    from pipeline import features

    assert {f"extractor/{n}" for n in features.names()} <= set(ENTRIES)
    assert {f"decoder/{t}" for t in decoders.TARGETS} <= set(ENTRIES)
    assert sum(name.startswith("render/") for name in ENTRIES) == 2


def test_decoder_versions_are_per_family() -> None:
    assert set(decoders.FAMILIES) == set(decoders.FAMILY_VERSIONS)
    assert sorted(t for ts in decoders.FAMILIES.values() for t in ts) == sorted(decoders.TARGETS)
    for family, targets in decoders.FAMILIES.items():
        for target in targets:
            assert decoders.family(target) == family
            assert decoders.version(target) == decoders.FAMILY_VERSIONS[family]
            assert isinstance(decoders.version(target), int)


# -- the outputs --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_output_matches_golden(name: str) -> None:
    entry = ENTRIES[name]
    problem = golden.check_entry(
        entry, META["entries"].get(name), ARRAYS.get(name), entry.compute()
    )
    assert problem is None, problem


# -- the comparison can fail ----------------------------------------------------------------
def _perturbed(name: str, index: tuple[int, ...], delta: float) -> np.ndarray:
    array = ARRAYS[name].astype(np.float64)
    array[index] += delta
    return array.astype(ARRAYS[name].dtype)


def test_a_perturbed_golden_array_is_reported() -> None:
    name = "extractor/hog"
    entry, meta = ENTRIES[name], _meta(name)
    output = entry.compute()
    atol = meta["tolerance"]["atol"]
    assert golden.check_entry(entry, meta, ARRAYS[name], output) is None
    within = _perturbed(name, (0, 3, 5, 7), 0.5 * atol)
    assert golden.digest(within) != meta["sha256"]  # the digest sees any change
    assert golden.check_entry(entry, meta, within, output) is None  # the tolerance does not
    beyond = _perturbed(name, (1, 30, 31, 0), 3 * atol)
    problem = golden.check_entry(entry, meta, beyond, output)
    assert problem is not None
    assert problem.startswith(f"{name}: output changed without a version bump (1 of ")
    assert "(1, 30, 31, 0)" in problem
    assert f"bump {entry.version_lives} and run {REGENERATE}" in problem
    assert "pipeline/features/hog/__init__.py" in problem


def test_compare_tolerances() -> None:
    gold = np.linspace(-1, 1, 100, dtype=np.float32).reshape(4, 25)
    assert golden.compare(gold, gold.copy(), atol=0.0) is None
    nudged = gold.copy()
    nudged[2, 3] += 1e-3
    assert golden.compare(gold, nudged, atol=2e-3) is None
    assert "1 of 100 values differ" in golden.compare(gold, nudged, atol=5e-4)
    assert golden.compare(gold, nudged, atol=5e-4, max_mismatches=1) is None
    with_nan = gold.copy()
    with_nan[0, 0] = np.nan
    assert golden.compare(gold, with_nan, atol=1.0) is not None  # NaN never passes
    assert "shape" in golden.compare(gold, gold[:3], atol=1.0)
    assert "dtype" in golden.compare(gold, gold.astype(np.float64), atol=1.0)


def test_sift_allows_a_few_flipped_cells_only() -> None:
    name = "extractor/sift"
    entry, meta = ENTRIES[name], _meta(name)
    allowed = entry.tolerance.max_mismatches
    current = ARRAYS[name]  # stride 1: the stored array is the full output
    flat = np.flatnonzero(current == 0)
    changed = current.copy().reshape(-1)
    changed[flat[:allowed]] = 1.0  # as many new values as the flipped cells allow
    changed = changed.reshape(current.shape)
    assert golden.check_entry(entry, meta, current, changed) is None
    changed.reshape(-1)[flat[allowed]] = 1.0
    problem = golden.check_entry(entry, meta, current, changed)
    assert problem is not None and "output changed without a version bump" in problem


def test_rendered_pixels_may_differ_by_one_only() -> None:
    name = "render/rocket"
    entry, meta = ENTRIES[name], _meta(name)
    current = ARRAYS[name]
    y, x, c = (int(i) for i in np.argwhere((current > 1) & (current < 254))[0])
    plus_one, plus_two = current.copy(), current.copy()
    plus_one[y, x, c] += 1
    plus_two[y, x, c] += 2
    assert golden.check_entry(entry, meta, current, plus_one) is None
    problem = golden.check_entry(entry, meta, current, plus_two)
    assert problem is not None
    assert f"bump RENDER_VERSION in pipeline/images.py and run {REGENERATE}" in problem


def test_other_version_says_stale() -> None:
    name = "decoder/conv3"
    entry, meta = ENTRIES[name], _meta(name)
    bumped = dataclasses.replace(entry, version=entry.version + 1)
    problem = golden.check_entry(bumped, meta, ARRAYS[name], np.zeros(meta["full_shape"]))
    assert problem is not None
    assert "golden file is stale" in problem and REGENERATE in problem
    assert f"version {entry.version}" in problem and f"version {entry.version + 1}" in problem
    assert golden.check_entry(entry, None, None, np.zeros(1)) == (
        f"{name}: has no golden output yet; run {REGENERATE}"
    )


def test_a_changed_decoder_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a leaky-ReLU slope of 0.21 instead of 0.2 fails its family's entries."""
    name = "decoder/fc8"
    entry = ENTRIES[name]
    monkeypatch.setattr(decoders, "LEAKY_SLOPE", 0.21)
    problem = golden.check_entry(entry, _meta(name), ARRAYS[name], entry.compute())
    assert problem is not None
    assert "bump FAMILY_VERSIONS['fc'] in pipeline/decoders.py" in problem
