"""What a new user trips on first: flags, paths, typos, empty sources, error advice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pipeline.config import load_section
from pipeline.errors import ConfigError
from pipeline.images import resolve_source
from pipeline.training import parse_train_section
from stages.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_steps_flag_wins_over_the_per_target_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--steps` overrides train.hog.steps too, and --device train.hog.device."""
    import stages.train

    seen: dict[str, Any] = {}

    def fake_train(target: str, **kwargs: Any) -> Any:
        seen["params"] = kwargs["params"]
        raise ConfigError("stop here")

    monkeypatch.setattr(stages.train, "train_decoder", fake_train)
    params = _params(tmp_path, {"train": {"steps": 150, "hog": {"steps": 300, "device": "cpu"}}})
    args = ["train", "hog", "--images", "i", "--out", "o", "--checkpoints", "c"]
    r = CliRunner().invoke(main, [*args, "--params", str(params), "--steps", "20"])
    assert "stop here" in r.output and seen["params"].steps == 20
    r = CliRunner().invoke(main, [*args, "--params", str(params)])
    assert seen["params"].steps == 300 and seen["params"].device == "cpu"


def test_a_misspelt_section_is_an_error(tmp_path: Path) -> None:
    params = _params(tmp_path, {"extarct": {"hog": {"cell_size": 4}}, "prepare": {}})
    with pytest.raises(
        ConfigError, match=r"unknown section\(s\) 'extarct' \(did you mean 'extract'"
    ):
        load_section(params, "prepare")
    r = CliRunner().invoke(main, ["prepare", "--out", str(tmp_path / "o"), "--params", str(params)])
    assert r.exit_code == 1 and "'extarct'" in r.output and not (tmp_path / "o").exists()


def test_an_unknown_train_key_is_reported_in_train() -> None:
    with pytest.raises(
        ConfigError, match=r"'stpes' \(did you mean 'steps'\?\) in params section 'train';"
    ):
        parse_train_section({"stpes": 3}, "hog")
    with pytest.raises(
        ConfigError,
        match=r"'stpes' \(did you mean 'steps'\?\) in params section 'train.autoencoder'",
    ):
        parse_train_section({"autoencoder": {"stpes": 3}}, "hog")
    with pytest.raises(
        ConfigError, match=r"'stpes' \(did you mean 'steps'\?\) in params section 'train.lbp'"
    ):
        parse_train_section({"lbp": {"stpes": 3}}, "hog")


def test_a_missing_params_file_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    r = CliRunner().invoke(main, ["prepare", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "params file 'params.yaml' does not exist" in r.output
    assert not (tmp_path / "o").exists()


def test_plain_paths_are_sources(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    listing = tmp_path / "files.txt"
    listing.write_text("a.jpg\n")
    assert resolve_source(str(photos)) == f"dir:{photos}"
    assert resolve_source(str(listing)) == f"list:{listing}"
    assert resolve_source("sample") == "sample"
    assert resolve_source(f"imagenet:{photos}") == f"imagenet:{photos}"
    assert resolve_source(str(tmp_path / "absent")) == str(tmp_path / "absent")


def test_a_folder_of_broken_files_is_an_error(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not a jpeg")
    (photos / "b.png").write_bytes(b"\x89PNG broken")
    params = _params(tmp_path, {"prepare": {"shard_size": 4, "runner": {"workers": 1}}})
    out = tmp_path / "images.zarr"
    r = CliRunner().invoke(
        main, ["prepare", "--source", str(photos), "--out", str(out), "--params", str(params)]
    )
    assert r.exit_code == 1, r.output
    assert "no usable image" in r.output and "a.jpg" in r.output and "b.png" in r.output
    assert not out.exists()
    # one readable photograph is enough, and the plain folder path is taken as dir:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(photos / "c.png")
    r = CliRunner().invoke(
        main, ["prepare", "--source", str(photos), "--out", str(out), "--params", str(params)]
    )
    assert r.exit_code == 0 and out.exists(), r.output


def test_a_missing_weights_file_names_the_key(tmp_path: Path) -> None:
    from pipeline import alexnet
    from pipeline.errors import WeightsError

    with pytest.raises(WeightsError, match=r"extract\.alexnet\.weights.*relative to the folder"):
        alexnet.describe_weights(str(tmp_path / "caffenet.caffemodel"))


def test_table_prints_the_error_table_with_n(tmp_path: Path) -> None:
    import json

    metrics = tmp_path / "eval"
    metrics.mkdir()
    m = {"normalised_error": 0.71349, "images": 64, "random_weights": False}
    trivial = {"mean_image": 0.8, "nearest_neighbour": 0.7}
    interval = {"interval_low": 0.69, "interval_high": 0.741}
    (metrics / "hog.json").write_text(json.dumps({**m, **trivial, **interval, "mode": "fixed"}))
    (metrics / "mv_hog.json").write_text(json.dumps({**m, "normalised_error": 0.9, "images": 4}))
    (metrics / "ae_fc8.json").write_text(
        json.dumps({**m, "normalised_error": 0.8671, "random_weights": True})
    )
    (metrics / "ds_conv5.json").write_text(json.dumps({**m, "normalised_error": 0.6543}))
    # below both baselines, the interval's top exactly at the mean image's error: not clearly
    unclear = {"mean_image": 0.8, "nearest_neighbour": 0.9, "interval_low": 0.75}
    (metrics / "ds_hog.json").write_text(
        json.dumps({**m, **unclear, "interval_high": 0.8, "normalised_error": 0.78})
    )
    # below the mean image but not the nearest neighbour, interval reaching both: '!'
    recalls = {**trivial, "interval_low": 0.66, "interval_high": 0.82, "mode": "fixed"}
    (metrics / "lbp.json").write_text(json.dumps({**m, **recalls, "normalised_error": 0.74}))
    # clearly below both: no flag
    clear = {**unclear, "interval_high": 0.79, "mode": "fixed"}
    (metrics / "conv1.json").write_text(json.dumps({**m, **clear, "normalised_error": 0.78}))
    r = CliRunner().invoke(main, ["table", "--metrics", str(metrics)])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.output.splitlines() if line[:1].isalpha()}
    assert "0.654 (n=64)" in rows["conv5"]  # a DeePSiM decoder alone makes its row
    header = r.output.splitlines()[0]
    assert header.index("DeePSiM") == rows["conv5"].index("0.654")  # in its own column
    assert "0.713 [0.69, 0.74] (n=64) !" in rows["hog"]  # the nearest neighbour scores 0.700
    assert rows["hog"].split("  ")[-1] != "?"
    assert "0.780 [0.75, 0.80] (n=64) ?" in rows["hog"]  # DeePSiM column: not clearly
    assert "0.740 [0.66, 0.82] (n=64) !" in rows["lbp"]  # the neighbour's 0.700 is lower
    assert "0.780 [0.75, 0.79] (n=64)  " in rows["conv1"] + "  "  # no flag
    assert "'?': better than both, but its 95% interval reaches the lower one's error." in r.output
    assert "0.900 (n=4)" in rows["hog"]
    assert "0.800" in rows["hog"] and "0.700" in rows["hog"]
    assert rows["hog"].rstrip().endswith("0.24")  # the paper's value beside ours
    assert "0.867 (n=64)" in rows["fc8"] and "sift" not in rows
    assert "RANDOM weights" in r.output
    assert "~" not in rows["fc8"]  # no fixed fc8 decoder to compare its steps with


def test_table_without_metrics_says_where_to_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a repository root: no dvc.yaml here
    r = CliRunner().invoke(main, ["table"])
    assert r.exit_code == 2
    assert "no metrics folder 'metrics/eval'" in r.output
    assert "run invert table from the repository root" in r.output
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    r = CliRunner().invoke(main, ["table"])
    assert r.exit_code == 2 and "run dvc repro first" in r.output, r.output


def test_table_shows_new_photos_undertrained_and_same_images(tmp_path: Path) -> None:
    import json

    evals, photos = tmp_path / "metrics" / "eval", tmp_path / "metrics" / "photos"
    evals.mkdir(parents=True)
    photos.mkdir()
    base = {"images": 96, "mean_image": 0.8, "nearest_neighbour": 0.9, "mode": "fixed"}
    (evals / "conv5.json").write_text(json.dumps({**base, "normalised_error": 0.5, "steps": 150}))
    (evals / "ae_conv5.json").write_text(json.dumps({**base, "normalised_error": 0.7, "steps": 60}))
    (evals / "mv_conv5.json").write_text(json.dumps({"normalised_error": 0.75, "images": 2}))
    (photos / "conv5.json").write_text(
        json.dumps({"normalised_error": 0.6, "mean_image": 0.8, "images": 24})
    )
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"conv5": {"ours": 0.4321, "mv": 0.75, "images": 2}}))
    args = ["table", "--metrics", str(evals), "--same-images", str(same)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if line.startswith("conv5"))
    assert "0.600 (0.75x mean, n=24)" in row  # 0.6 / 0.8 on the new photographs
    assert "0.700 (n=96) ~" in row  # 60 steps against the decoder's 150: undertrained
    assert "0.750 (n=2)" in row and "0.432" in row  # [1] and ours on [1]'s two images


def test_dvc_metrics_show_holds_evaluation_metrics_only() -> None:
    """Training losses are plain outputs; `dvc metrics show` is the error table's data: the
    test split's errors and the same decoders' errors on new photographs."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = [
        next(iter(m)) if isinstance(m, dict) else m
        for stage in stages.values()
        for m in stage.get("do", stage).get("metrics", [])
    ]
    assert declared and all(
        path.startswith(("metrics/eval/", "metrics/photos/")) for path in declared
    )


def test_an_empty_layer_list_is_a_config_error(tmp_path: Path) -> None:
    params = _params(tmp_path, {"extract": {"alexnet": {"layers": []}}})
    r = CliRunner().invoke(
        main,
        ["extract", "alexnet", "--images", "i", "--out", "o/{name}.zarr", "--params", str(params)],
    )
    assert r.exit_code == 1 and "extract.alexnet.layers is empty" in r.output, r.output
