"""The optimisation baseline as a stage: store, metrics comparable with the decoders'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.baseline import BaselineParams, run_baseline
from pipeline.errors import ConfigError
from pipeline.evaluation import rounded
from pipeline.inversion import InversionParams
from pipeline.store import open_store


def test_baseline_stage_on_hog(image_store: Path, tmp_path: Path) -> None:
    params = BaselineParams(
        images=2, batch_size=2, device="cpu", inversion=InversionParams(steps=5)
    )
    m = run_baseline(
        "hog",
        images_path=image_store,
        out=tmp_path / "mv_hog.zarr",
        metrics_path=tmp_path / "mv_hog.json",
        params=params,
    )
    assert m["images"] == 2 and m["mode"] == "optimisation [1]" and m["random_weights"] is False
    assert m["interval_low"] <= m["normalised_error"] <= m["interval_high"]
    assert json.loads((tmp_path / "mv_hog.json").read_text()) == rounded(m)
    assert abs(rounded(m)["normalised_error"] - m["normalised_error"]) <= 5e-5
    store = open_store(tmp_path / "mv_hog.zarr", kind="reconstructions")
    rec = store.array("reconstructions")[:]
    assert rec.shape == (2, 256, 256, 3) and rec.dtype == np.uint8 and rec.std() > 0
    test = open_store(image_store).array("split")[:] == 1
    assert list(store.array("index")[:]) == list(np.flatnonzero(test)[:2])


def test_baseline_refuses_non_differentiable_features(image_store: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not differentiable"):
        run_baseline(
            "lbp",
            images_path=image_store,
            out=tmp_path / "x.zarr",
            metrics_path=None,
            params=BaselineParams(),
        )
    with pytest.raises(ConfigError, match="images must be >= 2"):
        BaselineParams(images=1)
