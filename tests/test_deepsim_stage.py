"""DeePSiM decoders as stages: ``invert train --loss deepsim --init-from``, their params
(``train.deepsim_run``), and their rows in the report.

The training step itself is tested in ``test_deepsim_training.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from pipeline.errors import ConfigError
from pipeline.extract import ExtractParams, extract_store
from pipeline.run_report import findings, sharpness_rows
from pipeline.runner import RunnerParams
from pipeline.tables import error_table
from pipeline.training import parse_train_section
from stages.cli import main

PARAMS = """
extract:
  alexnet: {arch: caffenet, weights: "random:0"}
train:
  width: 0.125
  steps: 2
  batch_size: 2
  lr: 0.001
  checkpoint_every: 2
  eval_batches: 1
  device: cpu
  input_statistics: 8
  loader: {workers: 0, block_reads: 2}
  deepsim: {comparator_layer: conv1, lambda_feat: 1.0e-8}
  deepsim_run: {steps: 3, batch_size: 4, log_every: 1}
  hog: {steps: 6, checkpoint_every: 6}
"""


def test_deepsim_run_overrides_apply_last() -> None:
    section: dict[str, Any] = {
        "steps": 10,
        "batch_size": 32,
        "deepsim_run": {"steps": 3, "batch_size": 4},
        "hog": {"steps": 500, "lr": 0.01, "deepsim_run": {"steps": 7}},
    }
    pixel = parse_train_section(section, "hog")
    assert (pixel.loss, pixel.steps, pixel.batch_size, pixel.lr) == ("pixel", 500, 32, 0.01)
    ds = parse_train_section(section, "hog", loss="deepsim")
    # the target's own deepsim_run wins over the common one, which wins over train.hog
    assert (ds.loss, ds.steps, ds.batch_size, ds.lr) == ("deepsim", 7, 4, 0.01)
    other = parse_train_section(section, "conv5", loss="deepsim")
    assert (other.steps, other.batch_size) == (3, 4)
    assert parse_train_section({**section, "loss": "deepsim"}, "hog", loss="pixel").steps == 500
    with pytest.raises(ConfigError, match=r"'stpes' \(did you mean 'steps'\?\).*deepsim_run"):
        parse_train_section({"deepsim_run": {"stpes": 3}}, "hog")
    with pytest.raises(ConfigError, match=r"train\.hog\.deepsim_run' holds the other train keys"):
        parse_train_section({"hog": {"deepsim_run": {"loss": "pixel"}}}, "hog")


@pytest.fixture(scope="module")
def pixel_run(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    extract_store(
        "hog",
        image_store,
        root / "hog.zarr",
        run=ExtractParams(chunk_size=8, runner=RunnerParams(workers=2)),
    )
    (root / "params.yaml").write_text(PARAMS)
    r = CliRunner().invoke(main, _train_args(image_store, root, "hog"))
    assert r.exit_code == 0, r.output
    return root


def _train_args(image_store: Path, root: Path, out: str) -> list[str]:
    return [
        "train",
        "hog",
        "--images",
        str(image_store),
        "--features",
        str(root / "hog.zarr"),
        "--out",
        str(root / "models" / out),
        "--checkpoints",
        str(root / "ckpt"),
        "--params",
        str(root / "params.yaml"),
        "--plots",
        str(root / f"{out}.csv"),
    ]


def test_deepsim_fine_tunes_the_pixel_decoder(pixel_run: Path, image_store: Path) -> None:
    root = pixel_run
    pixel = root / "models" / "hog" / "model.pt"
    args = [*_train_args(image_store, root, "ds_hog"), "--loss", "deepsim"]
    r = CliRunner().invoke(main, [*args, "--init-from", str(pixel)])
    assert r.exit_code == 0, r.output
    config = json.loads((root / "models" / "ds_hog" / "config.json").read_text())
    assert config["params"]["loss"] == "deepsim" and config["params"]["steps"] == 3
    assert config["params"]["batch_size"] == 4  # train.deepsim_run, over train.hog's steps
    import hashlib

    assert config["init"]["sha256"] == hashlib.sha256(pixel.read_bytes()).hexdigest()
    assert config["init"]["steps"] == 6
    assert str(root) not in json.dumps(config)  # no path in what the run records
    rows = (root / "ds_hog.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,pixel,feature") and len(rows) == 1 + 3
    # started from the pixel decoder: the first step's pixel loss is the trained decoder's,
    # far below a random decoder's (a fresh start from random weights, for comparison)
    r = CliRunner().invoke(
        main, [*_train_args(image_store, root, "ds_scratch"), "--loss", "deepsim"]
    )
    assert r.exit_code == 0, r.output
    first = float(rows[1].split(",")[2])
    scratch = float((root / "ds_scratch.csv").read_text().splitlines()[1].split(",")[2])
    assert first < scratch
    # the DeePSiM decoder differs from the pixel one it started from
    a = torch.load(pixel, weights_only=True)["model"]
    b = torch.load(root / "models" / "ds_hog" / "model.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # HOG has no network, but the random comparator shaped these weights: said on top
    assert config["random_weights"] is True
    assert (
        json.loads((root / "models" / "hog" / "config.json").read_text())["random_weights"] is False
    )
    # its evaluation says which loss made the decoder; the pixel one's has no such key
    for name in ("hog", "ds_hog"):
        r = CliRunner().invoke(
            main,
            [
                "evaluate", str(root / "models" / name / "model.pt"),
                "--images", str(image_store), "--features", str(root / "hog.zarr"),
                "--out", str(root / f"rec_{name}.zarr"), "--metrics", str(root / f"{name}.json"),
                "--params", str(root / "params.yaml"),
            ],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    ds = json.loads((root / "ds_hog.json").read_text())
    px = json.loads((root / "hog.json").read_text())
    assert ds["loss"] == "deepsim" and ds["random_weights"] is True
    assert "loss" not in px and px["random_weights"] is False


def test_init_from_refuses_another_decoder(pixel_run: Path, image_store: Path) -> None:
    root = pixel_run
    wide = root / "wide.yaml"
    wide.write_text(PARAMS.replace("width: 0.125", "width: 0.25"))
    args = _train_args(image_store, root, "ds_wide")
    args[args.index("--params") + 1] = str(wide)
    pixel = root / "models" / "hog" / "model.pt"
    r = CliRunner().invoke(main, [*args, "--loss", "deepsim", "--init-from", str(pixel)])
    assert r.exit_code == 1 and "width 0.125, this run's 0.25" in r.output
    assert "Traceback" not in r.output
    assert not (root / "models" / "ds_wide" / "model.pt").exists()


def _metrics(err: float, ssim: float, hf: float, steps: int) -> dict[str, Any]:
    return {
        "target": "hog",
        "mode": "fixed",
        "normalised_error": err,
        "mean_image": 0.8,
        "nearest_neighbour": 1.0,
        "images": 96,
        "steps": steps,
        "sharpness": {
            "images": 96,
            "hf_cutoff": 0.25,
            "reconstructions": {"ssim_gaussian": ssim, "hf_ratio": hf},
            "mean_image": {"ssim_gaussian": 0.3, "hf_ratio": 0.001},
            "nearest_neighbour": {"ssim_gaussian": 0.2, "hf_ratio": 1.1},
        },
    }


def test_report_rows_and_finding_for_deepsim(tmp_path: Path) -> None:
    evals = {"hog": _metrics(0.70, 0.40, 0.05, 500), "ds_hog": _metrics(0.72, 0.42, 0.20, 20)}
    rows = sharpness_rows(evals, {"ds_hog": {"normalised_error": 0.75, "images": 24}})
    assert [(r["target"], r["loss"]) for r in rows] == [("hog", "pixel"), ("hog", "deepsim")]
    assert rows[1]["hf_ratio"] == 0.20 and rows[1]["photos"] == 0.75
    assert rows[0]["mean_image_hf"] == 0.001 and rows[0]["photos"] is None
    text = [f for f in findings(evals) if "DeePSiM" in f]
    assert text == [
        "HOG DeePSiM decoder (20 steps from the pixel-loss decoder): error 0.720 against the "
        "pixel loss's 0.700, high-frequency ratio 0.200 against 0.050 (sharper; the "
        "originals: 1), SSIM 0.420 against 0.400, on the same 96 test images. Against the "
        "trivial predictors: beats the mean image (0.800) and the nearest neighbour (1.000)."
    ]
    # an interval reaching the mean image's error: the report and the table say so
    evals["ds_hog"] |= {"normalised_error": 0.79, "interval_low": 0.75, "interval_high": 0.83}
    (text,) = [f for f in findings(evals) if "DeePSiM" in f]
    assert "error 0.790 [0.750, 0.830] against the pixel loss's 0.700," in text
    assert "reaches the mean image's 0.800: not clearly better than the mean image." in text
    (tmp_path / "ds_hog.json").write_text(json.dumps(evals["ds_hog"]))
    assert "0.790 [0.75, 0.83] (n=96) ?" in error_table(tmp_path)
