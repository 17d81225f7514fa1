"""Tests of :mod:`pipeline.collages` and of collages in the ``sample`` image source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.collages import collage, collage_path, parse_collage_path
from pipeline.errors import ConfigError, StoreError
from pipeline.images import PrepareParams, list_records, prepare, resize_center_crop
from pipeline.loader import LoaderParams, StoreStream, collage_samples
from pipeline.store import open_store
from pipeline.train_params import parse_train_section
from tests.conftest import small_prepare_params

COLOURS = [(200, 30, 10), (0, 90, 250), (40, 220, 60)]


def _flat(colour: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def test_a_collage_is_made_of_its_photographs_pixels_only() -> None:
    """Flat photographs of three colours: every pixel of a collage is one of them, and the
    disks of the other photographs do cover the background (an occluding layout)."""
    photos = [_flat(c, 300 + 40 * k, 400) for k, c in enumerate(COLOURS)]
    seen: set[tuple[int, ...]] = set()
    for seed in range(6):
        image = collage(photos, seed, 128, resize=resize_center_crop)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        colours = {tuple(int(v) for v in p) for p in np.unique(image.reshape(-1, 3), axis=0)}
        assert colours <= set(COLOURS), colours - set(COLOURS)
        seen |= colours
        assert len(colours) >= 2  # leaves of another photograph on the background
    assert seen == set(COLOURS)


def test_same_seed_same_bytes_other_seed_other_image() -> None:
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (220, 330, 3), dtype=np.uint8) for _ in range(3)]
    a = collage(photos, 7, resize=resize_center_crop)
    assert np.array_equal(a, collage(photos, 7, resize=resize_center_crop))
    assert not np.array_equal(a, collage(photos, 8, resize=resize_center_crop))
    assert a.shape == (256, 256, 3)


def test_collage_paths_round_trip_and_refuse_garbage() -> None:
    path = collage_path(123, ["rocket", "moon"])
    assert parse_collage_path(path) == (123, ["rocket", "moon"])
    assert parse_collage_path("skimage:rocket") is None
    with pytest.raises(ConfigError, match="not a collage path"):
        parse_collage_path("collage:x:rocket")
    with pytest.raises(ConfigError, match="at least one photograph"):
        collage([], 0, resize=resize_center_crop)


def test_sample_source_adds_collages_of_the_training_photographs_only() -> None:
    base = PrepareParams(train_samples=30, test_samples=6)
    plain, _ = list_records("sample", base)
    records, _ = list_records("sample", PrepareParams(train_samples=30, test_samples=6, collages=4))
    assert records[: len(plain)] == plain  # the crops do not move
    made = records[len(plain) :]
    assert [r.id for r in made] == [f"collage/train/{i:05d}" for i in range(4)]
    assert all(r.split == "train" for r in made)
    parsed = [parse_collage_path(r.path) for r in made]
    assert all(p is not None for p in parsed)
    train = {r.path.split(":", 1)[1] for r in plain if r.split == "train"}
    for p in parsed:
        assert p is not None and set(p[1]) == train
        assert not set(p[1]) & set(base.test_photos + base.holdout_photos)
    assert len({p[0] for p in parsed if p is not None}) == 4  # a seed each


def test_prepare_writes_collages_into_the_training_split(tmp_path: Path) -> None:
    params = small_prepare_params(train_samples=6, test_samples=3, collages=3, size=64)
    out = prepare("sample", tmp_path / "images.zarr", params)
    store = open_store(out, kind="images")
    ids = list(store.array("ids")[:])
    split = store.array("split")[:]
    images = store.array("images")
    records, _ = list_records("sample", params)
    from pipeline.images import _sample_photo

    for k, record in enumerate(records):
        parsed = parse_collage_path(record.path)
        if parsed is None:
            continue
        assert ids[k] == record.id and split[k] == 0  # train
        expected = collage(
            [_sample_photo(n) for n in parsed[1]], parsed[0], 64, resize=resize_center_crop
        )
        assert np.array_equal(images[k : k + 1][0], expected)
    assert sum(i.startswith("collage/") for i in ids) == 3


def test_collages_need_the_sample_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set it to 0"):
        list_records(f"dir:{tmp_path}", PrepareParams(collages=2))
    with pytest.raises(ConfigError, match="collages must be >= 0"):
        PrepareParams(collages=-1)


def _streamed(store: Path, collages: bool, batches: int) -> set[int]:
    """Store indices of the images a training stream hands out in ``batches`` batches of 3."""
    images = open_store(store, kind="images").array("images")
    stored = [images[k : k + 1][0] for k in range(images.shape[0])]
    loader = LoaderParams(workers=0, read_size=1, block_reads=2)
    stream = StoreStream(store, None, batch_size=3, params=loader, seed=0, collages=collages)
    seen = set()
    for _, (_, x) in zip(range(batches), stream):
        for image in x.permute(0, 2, 3, 1).numpy():
            seen.add(next(k for k, s in enumerate(stored) if np.array_equal(s, image)))
    return seen


def test_training_can_leave_the_collages_out(tmp_path: Path) -> None:
    """train.collages: false streams the training photographs only, from the same store;
    the choice is per target and enters a run's record only when it is false."""
    params = small_prepare_params(train_samples=6, test_samples=3, collages=3, size=64)
    out = prepare("sample", tmp_path / "images.zarr", params)
    ids = list(open_store(out, kind="images").array("ids")[:])
    flagged = [i for i, c in zip(ids, collage_samples(out), strict=True) if c]
    assert flagged == [f"collage/train/{k:05d}" for k in range(3)]
    crops = {k for k, i in enumerate(ids) if "/train/" in i and not i.startswith("collage/")}
    assert len(crops) == 6
    collages = {k for k, i in enumerate(ids) if i.startswith("collage/")}
    assert _streamed(out, True, 12) == crops | collages  # 36 samples: 4 epochs of 9
    assert _streamed(out, False, 12) == crops  # 6 epochs of 6, never a collage

    section = {"steps": 10, "lbp": {"collages": False}}
    lbp, hog = parse_train_section(section, "lbp"), parse_train_section(section, "hog")
    assert not lbp.collages and hog.collages
    assert lbp.record()["collages"] is False and "collages" not in hog.record()
    assert lbp.identity_fields() != parse_train_section({"steps": 10}, "lbp").identity_fields()
    with pytest.raises(ConfigError, match="collages"):
        parse_train_section({"lbp": {"collages": "no"}}, "lbp")

    only = small_prepare_params(train_samples=0, test_samples=3, collages=2, size=64)
    bare = prepare("sample", tmp_path / "collages.zarr", only)
    with pytest.raises(StoreError, match="all collages"):
        StoreStream(bare, None, batch_size=2, params=LoaderParams(workers=0), collages=False)
