"""Image sources and ``prepare``: real photographs, broken files, splits, layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError, ImageSourceError
from pipeline.images import (
    SAMPLE_PHOTOS,
    PrepareParams,
    list_records,
    load_image,
    prepare,
    resize_center_crop,
)
from pipeline.store import open_store
from tests.conftest import small_prepare_params


def _photo() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()  # (300, 451, 3)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """A folder of real and broken images, one of each kind prepare must handle."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rgb = _photo()
    Image.fromarray(rgb).save(root / "good.jpg", quality=90)
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rgb).convert("L").save(root / "sub" / "grey.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(root / "alpha.png")
    grey16 = (rgb[..., 1].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(root / "deep16.png")
    (root / "empty.jpg").write_bytes(b"")
    full = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "notes.jpg").write_text("this is not an image\n")
    Image.fromarray(rgb[:20, :20]).save(root / "tiny.png")
    return root


def test_sample_split_is_by_photograph_and_reproducible() -> None:
    params = PrepareParams(train_samples=60, test_samples=10)
    records, info = list_records("sample", params)
    again, _ = list_records("sample", params)
    assert records == again
    photo = {r.id: r.path.split(":")[1] for r in records}
    test_photos = {photo[r.id] for r in records if r.split == "test"}
    train_photos = {photo[r.id] for r in records if r.split == "train"}
    assert test_photos == set(params.test_photos)
    assert not test_photos & train_photos
    assert sum(r.split == "train" for r in records) == 60
    assert info["kind"] == "sample" and "skimage_version" in info
    assert any(r.flip for r in records) and not all(r.flip for r in records)


def test_limit_keeps_both_splits() -> None:
    records, _ = list_records("sample", PrepareParams(limit=30))
    assert len(records) == 30 and {r.split for r in records} == {"train", "test"}


def test_prepare_messy_folder_skips_and_lists(messy_folder: Path, tmp_path: Path) -> None:
    out = prepare(f"dir:{messy_folder}", tmp_path / "img.zarr", small_prepare_params())
    store = open_store(out, kind="images")
    skipped = {Path(s["path"]).name: s["reason"] for s in store.attrs["skipped"]}
    assert set(skipped) == {"empty.jpg", "truncated.jpg", "notes.jpg", "tiny.png"}
    assert "0 bytes" in skipped["empty.jpg"]
    assert "truncated" in skipped["truncated.jpg"]
    assert "not an image" in skipped["notes.jpg"]
    assert "too small" in skipped["tiny.png"]
    ids = list(store.array("ids")[:])
    valid = store.array("valid")[:]
    images = store.array("images")[:]
    assert ids == sorted(ids)  # stable order
    for i, name in enumerate(ids):
        assert bool(valid[i]) == (Path(name).name not in skipped)
        if not valid[i]:
            assert not images[i].any()
    assert store.attrs["conversions"] == {
        "CMYK -> RGB": 1,
        "grey -> RGB": 1,
        "alpha composited on white": 1,
        "16-bit grey -> 8-bit RGB": 1,
    }
    # the good JPEG equals resizing its decoded pixels ourselves
    good = ids.index("good.jpg")
    expected = resize_center_crop(np.asarray(Image.open(messy_folder / "good.jpg")), 256)
    np.testing.assert_array_equal(images[good], expected)
    # a grey file becomes three equal channels
    grey = images[ids.index("sub/grey.png")]
    assert (grey[..., 0] == grey[..., 2]).all()


def test_strict_names_the_file(messy_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageSourceError, match=r"empty\.jpg: empty file.*--strict"):
        prepare(f"dir:{messy_folder}", tmp_path / "img.zarr", small_prepare_params(strict=True))


def test_sources_without_images_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSourceError, match="holds no images"):
        list_records(f"dir:{tmp_path / 'empty'}", PrepareParams())
    with pytest.raises(ImageSourceError, match="does not exist"):
        list_records(f"dir:{tmp_path / 'nope'}", PrepareParams())
    with pytest.raises(ImageSourceError, match="unknown image source"):
        list_records("flickr:cats", PrepareParams())
    with pytest.raises(ImageSourceError, match="needs a path"):
        list_records("dir", PrepareParams())
    with pytest.raises(ImageSourceError, match="train/<wnid>"):
        list_records(f"imagenet:{tmp_path / 'empty'}", PrepareParams())


def test_imagenet_layout_keeps_labels(tmp_path: Path) -> None:
    rgb = _photo()
    for wnid in ("n02", "n01"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rgb).save(tmp_path / "train" / wnid / f"{wnid}_{k}.JPEG")
    (tmp_path / "val").mkdir()
    Image.fromarray(rgb).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n02 1 2 3 4\n"
    )
    out = prepare(f"imagenet:{tmp_path}", tmp_path / "img.zarr", small_prepare_params())
    store = open_store(out)
    assert store.attrs["classes"] == ["n01", "n02"]
    labels = dict(zip(store.array("ids")[:], store.array("labels")[:]))
    assert labels["train/n01/n01_0.JPEG"] == 0 and labels["train/n02/n02_1.JPEG"] == 1
    assert labels["val/ILSVRC2012_val_00000001.JPEG"] == 1
    split = dict(zip(store.array("ids")[:], store.array("split")[:]))
    assert split["val/ILSVRC2012_val_00000001.JPEG"] == 1  # test


def test_list_source(tmp_path: Path) -> None:
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    (tmp_path / "files.txt").write_text("# my images\na.png\n\n")
    records, _ = list_records(f"list:{tmp_path / 'files.txt'}", PrepareParams())
    assert [r.id for r in records] == ["a.png"] and Path(records[0].path).is_file()


def test_load_image_and_resize_shapes() -> None:
    img, conversion = load_image("skimage:rocket")
    assert img.shape == (427, 640, 3) and conversion is None
    out = resize_center_crop(img, 256)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8


def test_resize_shrinks_by_area_averaging() -> None:
    """Halving is the mean of each 2x2 block (the area rule), computed here with numpy."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(512, 768, 3), dtype=np.uint8)
    blocks = img.reshape(256, 2, 384, 2, 3).astype(np.float64).mean(axis=(1, 3))  # (256, 384, 3)
    expected = np.floor(blocks[:, 64:320] + 0.5)  # the centre 256 columns of 384
    out = resize_center_crop(img, 256)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0


def test_resize_enlarges_smoothly() -> None:
    """Enlarging a linear ramp 4x with a cubic kernel gives the ramp at the new pixel centres
    (cubic convolution reproduces linear functions); nearest-neighbour would be off by up to
    1.1 (a step of 3 every 4 pixels), more than the rounding allowed here."""
    x = np.arange(64, dtype=np.float64)
    ramp = np.broadcast_to((3.0 * x + 10.0)[None, :, None], (64, 64, 3)).astype(np.uint8)
    out = resize_center_crop(np.ascontiguousarray(ramp), 256).astype(np.float64)
    j = np.arange(256, dtype=np.float64)
    expected = 3.0 * ((j + 0.5) / 4.0 - 0.5) + 10.0  # source coordinate of output pixel j
    interior = slice(8, 248)  # away from the border replication
    assert np.abs(out[128, interior, 0] - expected[interior]).max() <= 0.6
    assert np.all(out[:, :, 0] == out[:1, :, 0])  # constant along y, as the input


def test_prepare_params_validation() -> None:
    with pytest.raises(ConfigError, match="not sample photographs"):
        PrepareParams(test_photos=("lena",))
    with pytest.raises(ConfigError, match="multiple of chunk_size"):
        PrepareParams(shard_size=10, chunk_size=4)
    with pytest.raises(ConfigError, match="test_fraction"):
        PrepareParams(test_fraction=1.5)
    assert "astronaut" in SAMPLE_PHOTOS
