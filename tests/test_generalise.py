"""Shallow-feature decoders learn the features, not the training photographs' colours.

The mechanism behind the embedded default's results (issue: results a researcher can trust):
a HOG decoder trained briefly on a small store of some photographs reconstructs crops of
*other* photographs (the test split) better than the training-mean image does, and the input
standardisation it needs is computed from the training features and travels in ``model.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline import decoders
from pipeline.checkpoints import read_model_file
from pipeline.errors import ConfigError, ImageSourceError, IncompatibleStoreError
from pipeline.evaluation import EvalParams, Photos, evaluate, score_photos
from pipeline.extract import ExtractParams, extract_store
from pipeline.features.hog import HogParams
from pipeline.images import SAMPLE_PHOTOS, PrepareParams, photo_crops, prepare
from pipeline.loader import LoaderParams, usable_indices
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from pipeline.training import TrainParams, input_statistics, train
from stages.cli import main

SHORT = TrainParams(
    width=0.125,
    steps=200,
    batch_size=16,
    lr=1e-3,
    lr_decay_every=1000,
    checkpoint_every=200,
    eval_batches=1,
    loader=LoaderParams(workers=0, block_reads=4),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """256 training crops of 19 photographs and 256 collages of them (as the embedded
    default), 24 test crops of 3 others, a HOG decoder."""
    root = tmp_path_factory.mktemp("generalise")
    images = prepare(
        "sample",
        root / "images.zarr",
        PrepareParams(
            train_samples=256,
            test_samples=24,
            collages=256,
            shard_size=64,
            runner=RunnerParams(workers=2, batch_size=32),
        ),
    )
    feats = root / "hog.zarr"
    extract_store("hog", images, feats, run=ExtractParams(device="cpu"))
    train(
        "hog",
        images_path=images,
        features_path=feats,
        out=root / "model",
        checkpoints=root / "ckpt",
        params=SHORT,
        progress=False,
    )
    evaluate(
        root / "model" / "model.pt",
        images_path=images,
        features_path=feats,
        out=root / "recs.zarr",
        metrics_path=root / "eval.json",
        params=EvalParams(device="cpu", baseline_images=256),
    )
    return {"images": images, "features": feats, "model": root / "model" / "model.pt", "root": root}


def test_a_short_run_beats_the_mean_image_on_other_photographs(trained: dict[str, Path]) -> None:
    m = json.loads((trained["root"] / "eval.json").read_text())
    assert m["images"] == 24  # 3 test photographs, none of them in the training split
    # the decoder learnt something of the features: clearly below the trivial predictors
    assert m["normalised_error"] < 0.95 * m["mean_image"], m
    assert m["normalised_error"] < m["nearest_neighbour"], m
    assert m["interval_low"] <= m["normalised_error"] <= m["interval_high"]


def test_the_input_statistics_are_the_training_features(trained: dict[str, Path]) -> None:
    """model.pt holds the per-channel mean and std of the training split's HOG cells."""
    blob, config = read_model_file(trained["model"])
    mean, std = blob["model"]["input_norm.mean"], blob["model"]["input_norm.std"]
    store = open_store(trained["features"], kind="features")
    idx = usable_indices(trained["features"], "train")  # all 512 (< input_statistics)
    f = store.array("features")[:][idx].astype(np.float64)  # (512, 31, 32, 32)
    expected_mean = f.mean(axis=(0, 2, 3))
    expected_std = f.std(axis=(0, 2, 3))
    np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-5, atol=1e-7)
    floor = 0.1 * expected_std.mean()
    np.testing.assert_allclose(std.numpy(), np.maximum(expected_std, floor), rtol=1e-4)
    assert config["decoder_version"] == decoders.version("hog") == 2


def test_input_statistics_by_hand() -> None:
    # two batches of (B=2, C=2, 2 positions): channel 0 holds 1 3 5 7 then four zeros,
    # channel 1 is zero everywhere
    first = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[5.0, 7.0], [0.0, 0.0]]])
    mean, std = input_statistics(iter([first, torch.zeros(2, 2, 2)]), 2)
    # channel 0: 1 3 5 7 0 0 0 0 -> mean 2, var (1+9+25+49)/8 - 4 = 6.5; channel 1: all zero
    assert mean.tolist() == pytest.approx([2.0, 0.0])
    assert std[0].item() == pytest.approx(6.5**0.5)
    assert std[1].item() == pytest.approx(0.1 * 6.5**0.5 / 2)  # floored: a tenth of the mean std


def test_input_norm_standardises_per_channel() -> None:
    net = decoders.build("fc8", width=0.01)
    x = torch.randn(3, 1000)
    y0 = net(x)
    mean, std = torch.randn(1000), torch.rand(1000) + 0.5
    net.get_submodule("input_norm").set(mean, std)
    torch.testing.assert_close(net(x * std + mean), y0, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="must be > 0"):
        net.get_submodule("input_norm").set(mean, torch.zeros(1000))
    with pytest.raises(ConfigError, match="input channels"):
        net.get_submodule("input_norm").set(mean[:5], std[:5])


def test_score_on_new_photographs(trained: dict[str, Path], tmp_path: Path) -> None:
    ids, photos = photo_crops("sample:grace_hopper,camera", crops=2)
    assert ids == [f"{p}#{k}" for p in ("grace_hopper", "camera") for k in range(3)]
    assert photos.shape == (6, 256, 256, 3) and photos.dtype == np.uint8
    again = photo_crops("sample:camera", crops=2)[1]
    np.testing.assert_array_equal(again, photos[3:])  # a photograph's crops ignore the others
    m = score_photos(
        trained["model"],
        Photos(photos, HogParams(), tmp_path / "photos.json", ("grace_hopper", "camera")),
        images_path=trained["images"],
        features_path=trained["features"],
        params=EvalParams(device="cpu", baseline_images=64),
    )
    assert m["images"] == 6 and m["target"] == "hog"
    written = json.loads((tmp_path / "photos.json").read_text())
    assert written["images"] == 6 and written["photographs"] == ["grace_hopper", "camera"]
    assert 0.2 < m["normalised_error"] < 1.5 and 0.2 < m["mean_image"] < 1.5
    with pytest.raises(IncompatibleStoreError, match="score it with the params file"):
        score_photos(
            trained["model"],
            Photos(photos, HogParams(num_orientations=6)),
            images_path=trained["images"],
            features_path=trained["features"],
            params=EvalParams(device="cpu"),
        )
    # evaluate --photos scores them the same way, reading the training subset once
    both = evaluate(
        trained["model"],
        images_path=trained["images"],
        features_path=trained["features"],
        out=tmp_path / "recs.zarr",
        params=EvalParams(device="cpu", baseline_images=64),
        photos=Photos(photos, HogParams(), tmp_path / "both.json", ("grace_hopper", "camera")),
    )
    assert both["photos"] == m
    assert (tmp_path / "both.json").read_bytes() == (tmp_path / "photos.json").read_bytes()


def test_score_refuses_another_feature_store(trained: dict[str, Path], tmp_path: Path) -> None:
    """A feature store the decoder was not trained on (same extractor, other images) is an
    IncompatibleStoreError naming the fix, not a raw error from the distance computation."""
    other = prepare(
        "sample:camera,coins",
        tmp_path / "other.zarr",
        PrepareParams(train_samples=8, test_samples=2, test_photos=["coins"], holdout_photos=[]),
    )
    extract_store("hog", other, tmp_path / "other_hog.zarr", run=ExtractParams(device="cpu"))
    photos = photo_crops("sample:grace_hopper", crops=1)[1]
    with pytest.raises(IncompatibleStoreError, match="pass the store it was trained with"):
        score_photos(
            trained["model"],
            Photos(photos, HogParams()),
            images_path=trained["images"],
            features_path=tmp_path / "other_hog.zarr",
            params=EvalParams(device="cpu"),
        )
    with pytest.raises(IncompatibleStoreError, match="pass it with --features"):
        score_photos(
            trained["model"],
            Photos(photos, HogParams()),
            images_path=trained["images"],
            features_path=None,
            params=EvalParams(device="cpu"),
        )


def test_score_command_on_a_folder(trained: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.images import load_image

    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("grace_hopper", "coins"):
        Image.fromarray(load_image(f"skimage:{name}")[0]).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {device: cpu, photo_crops: 1, baseline_images: 32}\n")
    args = ["score", str(trained["model"]), "--photos", str(folder), "--images"]
    args += [str(trained["images"]), "--features", str(trained["features"])]
    args += ["--metrics", str(tmp_path / "m.json"), "--params", str(params)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "on 4 crops of 2 new photographs" in result.output
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["images"] == 4  # the broken file is skipped, and not named
    assert sorted(written["photographs"]) == ["coins.png", "grace_hopper.png"]


def test_photo_sources_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ImageSourceError, match="names no sample photograph"):
        photo_crops("sample:lena", crops=0)
    with pytest.raises(ImageSourceError, match=r"no photographs at .*sample:NAME,NAME.*holdout"):
        photo_crops(str(tmp_path / "missing"), crops=0)
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(ImageSourceError, match=r"no usable photograph.*bad.png: empty file"):
        photo_crops(str(tmp_path), crops=0)


def test_the_sample_photographs_are_all_there() -> None:
    """Every photograph ships with a dependency (no download) and renders as RGB."""
    from pipeline.images import load_image

    for name in SAMPLE_PHOTOS:
        image, _ = load_image(f"skimage:{name}")
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 160, name
    params = PrepareParams()
    assert len(params.test_photos) >= 3
    assert not set(params.test_photos) & set(params.holdout_photos)
