"""Tests of :mod:`pipeline.sharpness` and of the sharpness block of the evaluation metrics.

SSIM is checked against scikit-image's ``structural_similarity`` in Wang et al.'s setting
(Gaussian window σ 1.5, population covariance) on a luma computed here, against a value
worked by hand, and by its properties (1 on itself, lower with more blur or noise). The
blur is scipy's, independent of the module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from skimage.metrics import structural_similarity

from pipeline.errors import ConfigError
from pipeline.sharpness import high_frequency_ratio, sharpness_metrics, ssim

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


def _texture(n: int = 2, side: int = 64) -> np.ndarray:
    """(n, side, side, 3) float in [0, 1]: uniform noise, power at every frequency."""
    return np.random.default_rng(0).random((n, side, side, 3))


def _photos(photo_batch: np.ndarray) -> np.ndarray:
    """The four photographs as float64 in [0, 1]."""
    return photo_batch.astype(np.float64) / 255.0


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return scipy.ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect")


# --- SSIM ---------------------------------------------------------------------------------


def test_ssim_of_an_image_with_itself_is_one(photo_batch: np.ndarray) -> None:
    x = _photos(photo_batch)
    np.testing.assert_allclose(ssim(x, x.copy()), 1.0, atol=1e-12)


def test_ssim_of_two_flat_images_is_the_luminance_term() -> None:
    """Flat images have no variance: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01·1)²."""
    a, b = np.full((1, 16, 16, 3), 0.5), np.full((1, 16, 16, 3), 0.25)
    expected = (2 * 0.5 * 0.25 + 1e-4) / (0.5**2 + 0.25**2 + 1e-4)
    assert ssim(a, b)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", ["photos", "noise", "photos_blurred"])
def test_ssim_matches_scikit_image_in_wang_et_al_setting(
    photo_batch: np.ndarray, kind: str
) -> None:
    rng = np.random.default_rng(3)
    if kind == "noise":
        x, y = rng.random((3, 40, 56, 3)), rng.random((3, 40, 56, 3))  # not square
    else:
        x = _photos(photo_batch)
        y = np.clip(x + rng.normal(0, 0.08, x.shape), 0, 1)
        if kind == "photos_blurred":
            y = _blur(x, 2.0)
    got = ssim(x, y)
    expected = [
        structural_similarity(
            a @ LUMA,
            b @ LUMA,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for a, b in zip(x, y)
    ]
    np.testing.assert_allclose(got, expected, atol=1e-9)  # the same formula: float noise only
    np.testing.assert_allclose(ssim(y, x), got, atol=1e-12)  # symmetric


def test_ssim_falls_with_more_blur_and_more_noise(photo_batch: np.ndarray) -> None:
    x = _photos(photo_batch)
    blurred = np.stack([ssim(x, _blur(x, s)) for s in (0.5, 1.0, 2.0, 4.0)])  # (4 σ, N)
    assert np.all(np.diff(blurred, axis=0) < 0), blurred
    rng = np.random.default_rng(0)
    unit = rng.normal(0, 1, x.shape)
    noisy = np.stack([ssim(x, np.clip(x + s * unit, 0, 1)) for s in (0.02, 0.05, 0.1, 0.2)])
    assert np.all(np.diff(noisy, axis=0) < 0), noisy
    assert np.all(blurred < 1) and np.all(noisy > 0)


def test_ssim_validation() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ConfigError, match=r"of one shape \(N, S, S, 3\)"):
        ssim(rng.random((1, 16, 16, 3)), rng.random((1, 16, 12, 3)))
    with pytest.raises(ConfigError, match=r"pass channel-last RGB batches"):
        ssim(rng.random((1, 3, 16, 16)), rng.random((1, 3, 16, 16)))
    with pytest.raises(ConfigError, match=r"at least 11x11 pixels \(its window\), got 10x16"):
        ssim(rng.random((1, 10, 16, 3)), rng.random((1, 10, 16, 3)))
    with pytest.raises(ConfigError, match=r"data_range must be the positive pixel range"):
        ssim(rng.random((1, 16, 16, 3)), rng.random((1, 16, 16, 3)), data_range=0.0)


# --- high-frequency ratio -----------------------------------------------------------------


def test_high_frequency_ratio_identical_is_one() -> None:
    target = _texture()
    assert high_frequency_ratio(target, target.copy()) == pytest.approx(1.0, abs=1e-12)


def test_high_frequency_ratio_blur_is_below_one() -> None:
    target = _texture()
    blurred = scipy.ndimage.gaussian_filter(target, sigma=(0, 1.5, 1.5, 0), mode="wrap")
    ratio = high_frequency_ratio(blurred, target)
    assert 0 < ratio < 0.2
    stronger = scipy.ndimage.gaussian_filter(target, sigma=(0, 3.0, 3.0, 0), mode="wrap")
    assert high_frequency_ratio(stronger, target) < ratio


def test_high_frequency_ratio_of_blurred_photographs_falls(photo_batch: np.ndarray) -> None:
    x = _photos(photo_batch)
    ratios = [high_frequency_ratio(_blur(x, s), x) for s in (0.5, 1.0, 2.0)]
    assert 1 > ratios[0] > ratios[1] > ratios[2] > 0, ratios


def test_high_frequency_ratio_flat_is_zero() -> None:
    target = _texture()
    flat = np.full_like(target, 0.4)
    assert high_frequency_ratio(flat, target) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("recon", "target", "cutoff", "match"),
    [
        ((1, 8, 8, 3), (1, 8, 8, 3), 0.0, r"cutoff must be a fraction of Nyquist in \(0, 1\)"),
        ((1, 8, 8, 3), (1, 8, 8, 3), 1.0, r"cutoff must be a fraction of Nyquist"),
        ((1, 8, 8, 3), (1, 16, 16, 3), 0.25, r"of one shape \(N, S, S, 3\)"),
        ((1, 3, 8, 8), (1, 3, 8, 8), 0.25, r"pass channel-last RGB batches"),
        ((1, 8, 6, 3), (1, 8, 6, 3), 0.25, r"expected square images, got 8x6"),
    ],
)
def test_high_frequency_ratio_validation(
    recon: tuple[int, ...], target: tuple[int, ...], cutoff: float, match: str
) -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ConfigError, match=match):
        high_frequency_ratio(rng.random(recon), rng.random(target), cutoff=cutoff)


def test_high_frequency_ratio_refuses_flat_targets() -> None:
    flat = np.full((1, 8, 8, 3), 0.5)
    with pytest.raises(ConfigError, match="the targets have no power above the cutoff"):
        high_frequency_ratio(flat, flat)


# --- the metrics block --------------------------------------------------------------------


def test_sharpness_metrics_score_each_prediction_set(photo_batch: np.ndarray) -> None:
    x = _photos(photo_batch)
    mean = np.broadcast_to(x.mean(axis=0), x.shape)
    m = sharpness_metrics(x, {"reconstructions": x, "mean_image": mean, "blur": _blur(x, 2.0)})
    assert list(m) == ["images", "hf_cutoff", "reconstructions", "mean_image", "blur"]
    assert m["images"] == 4 and m["hf_cutoff"] == 0.25
    assert m["reconstructions"] == pytest.approx({"ssim_gaussian": 1.0, "hf_ratio": 1.0})
    # the mean of four photographs still has some detail; blur keeps the structure better
    assert m["mean_image"]["ssim_gaussian"] < m["blur"]["ssim_gaussian"] < 1
    assert 0 < m["blur"]["hf_ratio"] < 0.5


def test_rounded_rounds_inside_the_sharpness_block() -> None:
    from pipeline.evaluation import rounded

    m = {"ssim": 0.123456, "steps": 3, "sharpness": {"images": 2, "hf_cutoff": 0.25}}
    m["sharpness"]["mean_image"] = {"ssim_gaussian": 0.0123456, "hf_ratio": 0.000049}
    assert rounded(m) == {
        "ssim": 0.1235,
        "steps": 3,
        "sharpness": {
            "images": 2,
            "hf_cutoff": 0.25,
            "mean_image": {"ssim_gaussian": 0.0123, "hf_ratio": 0.0},
        },
    }


#: the keys of an evaluation metrics file before the sharpness block, in their order
EVAL_KEYS = [
    "target",
    "mode",
    "normalised_error",
    "interval_low",
    "interval_high",
    "ssim",
    "psnr",
    "images",
    "mean_image",
    "nearest_neighbour",
    "baseline_images",
    "steps",
    "paper",
    "random_weights",
]


def test_evaluate_reports_sharpness_for_the_decoder_and_the_baselines(
    image_store: Path, photo_batch: np.ndarray, tmp_path: Path
) -> None:
    """The metrics files (test split and photographs) gain the block; the mean image's
    values against skimage's SSIM on a luma computed here from the stored images."""
    from pipeline import features
    from pipeline.evaluation import EvalParams, Photos, evaluate
    from pipeline.extract import extract_store
    from pipeline.loader import LoaderParams, usable_indices
    from pipeline.store import open_store
    from pipeline.training import TrainParams, train

    hog = extract_store("hog", image_store, tmp_path / "hog.zarr")
    params = TrainParams(
        width=0.125, steps=2, batch_size=4, eval_batches=0, loader=LoaderParams(workers=0)
    )
    model = train(
        "hog",
        images_path=image_store,
        features_path=hog,
        out=tmp_path / "m",
        checkpoints=tmp_path / "c",
        params=params,
        progress=False,
    ).model_path
    photos = Photos(photo_batch, features.parse_params("hog", {}), tmp_path / "photos.json")
    evaluate(
        model,
        images_path=image_store,
        features_path=hog,
        out=tmp_path / "r.zarr",
        metrics_path=tmp_path / "eval.json",
        params=EvalParams(device="cpu", baseline_images=10_000),  # every training image
        photos=photos,
    )
    m = json.loads((tmp_path / "eval.json").read_text())
    assert list(m) == [*EVAL_KEYS, "sharpness"]
    assert open_store(tmp_path / "r.zarr").attrs["metrics"] == m
    p = json.loads((tmp_path / "photos.json").read_text())
    assert list(p) == [k for k in EVAL_KEYS if k not in ("steps", "paper")] + ["sharpness"]
    names = ["reconstructions", "mean_image", "nearest_neighbour"]
    for got, n in ((m, m["images"]), (p, 4)):
        block = got["sharpness"]
        assert list(block) == ["images", "hf_cutoff", *names] and block["images"] == n
        for name in names:
            assert list(block[name]) == ["ssim_gaussian", "hf_ratio"]
            values = block[name].values()
            assert all(isinstance(v, float) and round(v, 4) == v for v in values), block
        # blur scores: the mean image has almost no detail; a real photograph has
        assert block["mean_image"]["hf_ratio"] < 0.1 < block["nearest_neighbour"]["hf_ratio"]
    images = open_store(image_store).array("images")[:].astype(np.float64) / 255.0
    train_idx, test_idx = usable_indices(image_store, "train"), usable_indices(image_store, "test")
    mean = images[train_idx].mean(axis=0) @ LUMA
    expected = np.mean(
        [
            structural_similarity(
                t @ LUMA,
                mean,
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for t in images[test_idx]
        ]
    )
    assert abs(m["sharpness"]["mean_image"]["ssim_gaussian"] - expected) < 2e-3  # uint8 targets


def test_table_prints_sharpness_only_when_asked(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stages.cli import main

    evals = tmp_path / "eval"
    evals.mkdir()
    pair = {"ssim_gaussian": 0.41234, "hf_ratio": 0.1234}
    block = {"images": 96, "hf_cutoff": 0.25, "reconstructions": pair}
    base = {"normalised_error": 0.7, "images": 96, "mode": "fixed"}
    mean, nearest = (
        {"ssim_gaussian": 0.2, "hf_ratio": 0.0012},
        {"ssim_gaussian": 0.1, "hf_ratio": 1.1},
    )
    full = {**block, "mean_image": mean, "nearest_neighbour": nearest}
    (evals / "hog.json").write_text(json.dumps({**base, "sharpness": full}))
    mv = {**base, "images": 2, "sharpness": {**block, "images": 2}}
    (evals / "mv_hog.json").write_text(json.dumps(mv))
    (evals / "sift.json").write_text(json.dumps(base))  # written before the block existed
    plain = CliRunner().invoke(main, ["table", "--metrics", str(evals)])
    assert plain.exit_code == 0 and "SSIM" not in plain.output, plain.output
    r = CliRunner().invoke(main, ["table", "--metrics", str(evals), "--sharpness"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(plain.output)  # the error table first, as without the flag
    added = r.output[len(plain.output) :].splitlines()
    rows = {line.split()[0]: line.split() for line in added if line[:1].isalpha()}
    hog = ["hog", "0.412", "/", "0.123", "0.200", "/", "0.001", "0.100", "/", "1.100", "96"]
    assert rows["hog"] == hog
    assert rows["mv_hog"] == ["mv_hog", "0.412", "/", "0.123", "–", "–", "2"]  # no baselines
    assert "sift" not in rows and "hf: power above 0.25 x Nyquist" in r.output
    (evals / "hog.json").unlink()
    (evals / "mv_hog.json").unlink()
    old = CliRunner().invoke(main, ["table", "--metrics", str(evals), "--sharpness"])
    assert old.exit_code == 0 and "No sharpness block in" in old.output, old.output
