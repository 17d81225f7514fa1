"""End to end on real photographs: stores -> tiny decoders -> evaluation -> figures -> report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.alexnet.activations import AlexNetParams
from pipeline.evaluation import evaluate, normalised_error
from pipeline.extract import ExtractParams, extract_store, extract_stores
from pipeline.loader import LoaderParams
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from pipeline.training import TrainParams, train
from stages.cli import main

TINY = TrainParams(
    width=0.125,
    steps=3,
    batch_size=4,
    lr=1e-3,
    checkpoint_every=3,
    eval_batches=1,
    loader=LoaderParams(workers=0, block_reads=2),
)


@pytest.fixture(scope="module")
def run(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    feats, models, recs, metrics = (
        root / "features",
        root / "models",
        root / "recs",
        root / "metrics",
    )
    xp = ExtractParams(chunk_size=8, device="cpu", runner=RunnerParams(workers=2))
    extract_store("hog", image_store, feats / "hog.zarr", run=xp)
    layers = ["conv5", "fc6", "fc8"]
    extract_stores(
        layers,
        image_store,
        {n: feats / "alexnet" / f"{n}.zarr" for n in layers},
        params=AlexNetParams(weights="random:0"),
        run=xp,
    )
    for target in ["hog", *layers]:
        fpath = (
            feats / f"{target}.zarr" if target == "hog" else feats / "alexnet" / f"{target}.zarr"
        )
        train(
            target,
            images_path=image_store,
            features_path=fpath,
            out=models / target,
            checkpoints=root / "ckpt",
            params=TINY,
            progress=False,
            plots_path=root / "plots" / "train" / f"{target}.csv",
        )
        evaluate(
            models / target / "model.pt",
            images_path=image_store,
            features_path=fpath,
            out=recs / f"{target}.zarr",
            metrics_path=metrics / "eval" / f"{target}.json",
        )
    from pipeline.baseline import BaselineParams, run_baseline
    from pipeline.inversion import InversionParams

    run_baseline(
        "hog",
        images_path=image_store,
        out=recs / "mv_hog.zarr",
        metrics_path=metrics / "eval" / "mv_hog.json",
        params=BaselineParams(images=2, batch_size=2, inversion=InversionParams(steps=2)),
    )
    ae = TrainParams(**{**TINY.__dict__, "mode": "autoencoder", "steps": 1})
    train(
        "conv5",
        images_path=image_store,
        features_path=None,
        out=models / "ae_conv5",
        checkpoints=root / "ckpt",
        params=ae,
        progress=False,
    )
    evaluate(
        models / "ae_conv5" / "model.pt",
        images_path=image_store,
        features_path=None,
        out=recs / "ae_conv5.zarr",
        metrics_path=metrics / "eval" / "ae_conv5.json",
    )
    return root


def _figure_inputs(run: Path) -> list[str]:
    """The path options of `invert figures` for the fixture's run (as dvc.yaml passes them)."""
    return [
        "--features",
        str(run / "features" / "alexnet" / "{name}.zarr"),
        "--decoders",
        str(run / "models" / "{name}" / "model.pt"),
        "--autoencoders",
        str(run / "models" / "ae_{name}" / "model.pt"),
        "--reconstructions",
        str(run / "recs" / "{name}.zarr"),
        "--ae-reconstructions",
        str(run / "recs" / "ae_{name}.zarr"),
        "--mv-reconstructions",
        str(run / "recs" / "mv_{name}.zarr"),
    ]


def _report_inputs(run: Path) -> list[str]:
    """The path options of `invert report` for the fixture's run."""
    options = {
        "--metrics": "metrics/eval/{name}.json",
        "--ae-metrics": "metrics/eval/ae_{name}.json",
        "--mv-metrics": "metrics/eval/mv_{name}.json",
        "--photo-metrics": "metrics/photos/{name}.json",
        "--ae-photo-metrics": "metrics/photos/ae_{name}.json",
        "--loss-curves": "plots/train/{name}.csv",
        "--ae-loss-curves": "plots/train/ae_{name}.csv",
    }
    return [arg for option, path in options.items() for arg in (option, str(run / path))]


def test_normalised_error_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 8, 8, 3))
    assert normalised_error(x, x) == 0.0
    # reconstructing every image as another test image costs about one mean distance
    shifted = np.roll(x, 1, axis=0)
    d = np.mean([np.linalg.norm(x[i] - x[j]) for i in range(5) for j in range(5) if i != j])
    expected = np.mean([np.linalg.norm(x[i] - shifted[i]) for i in range(5)]) / d
    assert normalised_error(x, shifted) == pytest.approx(expected)
    # a subset divided by the whole set's mean distance (the baseline's convention)
    sub = np.mean([np.linalg.norm(x[i] - shifted[i]) for i in range(2)]) / d
    assert normalised_error(x[:2], shifted[:2], reference=x) == pytest.approx(sub)


def test_evaluation_metrics_and_store(run: Path, image_store: Path) -> None:
    m = json.loads((run / "metrics" / "eval" / "hog.json").read_text())
    assert m["target"] == "hog" and m["mode"] == "fixed" and m["paper"] == 0.24
    assert 0 <= m["ssim"] <= 1 and m["images"] == 8 and m["steps"] == TINY.steps
    store = open_store(run / "recs" / "hog.zarr", kind="reconstructions")
    # the stored number is the paper's formula on the stored images (up to their uint8
    # rounding), written out here independently of pipeline.evaluation
    rec = store.array("reconstructions")[:].reshape(8, -1) / 255.0
    tgt = store.array("targets")[:].reshape(8, -1) / 255.0
    pairs = [np.linalg.norm(tgt[i] - tgt[j]) for i in range(8) for j in range(8) if i != j]
    by_hand = np.mean(np.linalg.norm(tgt - rec, axis=1)) / np.mean(pairs)
    assert m["normalised_error"] == pytest.approx(by_hand, abs=5e-3)
    mean_image = np.linalg.norm(tgt - tgt.mean(axis=0), axis=1).mean() / np.mean(pairs)
    # the training-mean image cannot do much better than the test split's own mean image
    assert 0.95 * mean_image < m["mean_image"] < 2.0 * mean_image
    assert store.array("reconstructions").shape == (8, 256, 256, 3)
    images = open_store(image_store).array("images")
    index = store.array("index")[:]
    np.testing.assert_array_equal(store.array("targets")[:], images[:][index])
    fc8 = json.loads((run / "metrics" / "eval" / "fc8.json").read_text())
    assert fc8["random_weights"] is True
    assert open_store(run / "recs" / "fc8.zarr").array("reconstructions").shape[1] == 128


def test_figures_and_report(run: Path, image_store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "figures",
            "--images",
            str(image_store),
            *_figure_inputs(run),
            "--out",
            str(tmp_path / "figs"),
            "--params",
            str(tmp_path / "none.yaml"),
        ],
    )
    assert r.exit_code == 1 and "does not exist" in r.output  # an explicit params file must exist
    (tmp_path / "p.yaml").write_text("figures:\n  images: 2\n  neurons: 3\n")
    r = runner.invoke(
        main,
        [
            "figures",
            "--images",
            str(image_store),
            *_figure_inputs(run),
            "--out",
            str(tmp_path / "figs"),
            "--params",
            str(tmp_path / "p.yaml"),
        ],
    )
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "figs").glob("fig*.png"))
    assert names == [
        "fig1_shallow.png",
        "fig2_alexnet.png",
        "fig3_dark_knowledge.png",
        "fig4_single_neurons.png",
        "fig5_methods.png",
        "fig6_interpolation.png",
        "fig7_interpolation_ae.png",
        "fig8_random_features.png",
    ]
    # the decoder on exactly [1]'s two images, with the whole split's denominator
    same = json.loads((tmp_path / "figs" / "same_images.json").read_text())
    ours, mv = open_store(run / "recs" / "hog.zarr"), open_store(run / "recs" / "mv_hog.zarr")
    pos = [list(ours.array("index")[:]).index(k) for k in mv.array("index")[:]]
    t = ours.array("targets")[:].reshape(len(pos) and -1, 256 * 256 * 3) / 255.0
    r = ours.array("reconstructions")[:].reshape(len(t), -1) / 255.0
    d = np.linalg.norm(t[:, None] - t[None], axis=2)[~np.eye(len(t), dtype=bool)].mean()
    expected = np.linalg.norm(t[pos] - r[pos], axis=1).mean() / d
    assert same["hog"]["images"] == 2 and abs(same["hog"]["ours"] - expected) < 1e-3
    assert set(same) == {"hog"}  # no [1] run for the other targets
    r = runner.invoke(
        main,
        [
            "report",
            "--images",
            str(image_store),
            "--alexnet-store",
            str(run / "features" / "alexnet" / "conv5.zarr"),
            *_report_inputs(run),
            "--figures",
            str(tmp_path / "figs"),
            "--out",
            str(tmp_path / "rep"),
            "--params",
            str(tmp_path / "p.yaml"),
        ],
    )
    assert r.exit_code == 0, r.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "RANDOM" in html.upper() and "0.24" in html and "fig2_alexnet" in html


def test_deepsim_figure_side_by_side(run: Path, image_store: Path, tmp_path: Path) -> None:
    import shutil

    import zarr

    from pipeline.paper import FigureInputs, FigureParams, fig9_deepsim

    recs = tmp_path / "recs"
    shutil.copytree(run / "recs", recs)
    # a stand-in for a DeePSiM decoder's reconstructions of HOG: the pixel decoder's, darkened
    ds = open_store(recs / "hog.zarr", kind="reconstructions")
    shutil.copytree(recs / "hog.zarr", recs / "ds_hog.zarr")
    darker = zarr.open_group(recs / "ds_hog.zarr", mode="r+")["reconstructions"]
    darker[:] = ds.array("reconstructions")[:] // 2

    def inputs(ds_template: str | None) -> FigureInputs:
        return FigureInputs(
            images=image_store,
            features=str(run / "features" / "alexnet" / "{name}.zarr"),
            decoders=str(run / "models" / "{name}" / "model.pt"),
            autoencoders=str(run / "models" / "ae_{name}" / "model.pt"),
            reconstructions=str(recs / "{name}.zarr"),
            ae_reconstructions=str(recs / "ae_{name}.zarr"),
            mv_reconstructions=str(recs / "mv_{name}.zarr"),
            ds_reconstructions=ds_template,
        )

    p = FigureParams(images=2)
    assert fig9_deepsim(inputs(None), p, tmp_path, "") is None  # no DeePSiM decoders given
    made = fig9_deepsim(inputs(str(recs / "ds_{name}.zarr")), p, tmp_path, "")
    assert made is not None
    caption, png = made
    m = json.loads((run / "metrics" / "eval" / "hog.json").read_text())
    sharp = m["sharpness"]["reconstructions"]
    pixel = (
        f"HOG: pixel error {m['normalised_error']:.2f}, SSIM {sharp['ssim_gaussian']:.2f}, "
        f"high-frequency ratio {sharp['hf_ratio']:.2f}; DeePSiM error"
    )
    assert pixel in caption
    assert "CONV5" not in caption  # only targets with both decoders
    from PIL import Image

    # one column (HOG) of 3 rows (original, pixel, DeePSiM) x 2 images
    with Image.open(png) as im:
        assert im.size[1] > im.size[0]
