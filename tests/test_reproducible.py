"""Same inputs, same bytes: every file a stage writes depends on its inputs only.

Two runs of prepare and extract (HOG, LBP, every AlexNet layer), in folders with other
names, with other worker counts (other thread completion orders) and at other times, write
byte-identical stores; two trainings of a tiny decoder write the same ``model.pt`` and the
same reconstruction store. This is what lets DVC and a shared cache recognise work done
elsewhere (``tests/test_lab_flow.py`` runs the same through ``dvc repro``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.alexnet.activations import AlexNetParams
from pipeline.evaluation import EvalParams, evaluate
from pipeline.extract import ExtractParams, extract_store, extract_stores
from pipeline.images import prepare
from pipeline.loader import LoaderParams
from pipeline.runner import RunnerParams
from pipeline.training import TrainParams, train
from tests.conftest import small_prepare_params

LAYERS = ("conv1", "conv5", "fc8")
TINY = TrainParams(
    width=0.125,
    steps=4,
    batch_size=4,
    lr=1e-3,
    checkpoint_every=2,
    log_every=1,
    eval_batches=1,
    loader=LoaderParams(workers=0, block_reads=2),
)


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256 of its bytes)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(root: Path, workers: int) -> Path:
    """prepare -> extract hog, lbp, AlexNet layers -> train + evaluate a HOG decoder."""
    runner = RunnerParams(workers=workers, batch_size=8)
    images = prepare(
        "sample",
        root / "cache" / "images.zarr",
        small_prepare_params(train_samples=24, test_samples=8, shard_size=8, runner=runner),
    )
    run = ExtractParams(runner=runner)
    for name in ("hog", "lbp"):
        extract_store(name, images, root / "cache" / f"{name}.zarr", run=run)
    extract_stores(
        list(LAYERS),
        images,
        {layer: root / "cache" / "alexnet" / f"{layer}.zarr" for layer in LAYERS},
        params=AlexNetParams(weights="random:0", layers=LAYERS),
        run=run,
    )
    result = train(
        "hog",
        images_path=images,
        features_path=root / "cache" / "hog.zarr",
        out=root / "models" / "hog",
        checkpoints=root / "checkpoints",
        params=TINY,
        progress=False,
    )
    evaluate(
        result.model_path,
        images_path=images,
        features_path=root / "cache" / "hog.zarr",
        out=root / "reconstructions" / "hog.zarr",
        metrics_path=root / "metrics" / "hog.json",
        params=EvalParams(device="cpu"),
    )
    return root


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first = _run(tmp_path_factory.mktemp("alice-laptop"), workers=1)
    second = _run(tmp_path_factory.mktemp("cluster-node-17") / "deeper" / "path", workers=2)
    return first, second


@pytest.mark.parametrize(
    "folder",
    ["cache/images.zarr", "cache/hog.zarr", "cache/lbp.zarr", "cache/alexnet"],
)
def test_stores_are_byte_identical(two_runs: tuple[Path, Path], folder: str) -> None:
    a, b = (_files(root / folder) for root in two_runs)
    assert len(a) > 5  # zarr.json files, shard files, small arrays
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert not differ, f"{folder}: {len(differ)} of {len(a)} files differ: {differ[:5]}"


def test_model_and_reconstructions_are_byte_identical(two_runs: tuple[Path, Path]) -> None:
    for folder in ("models/hog", "reconstructions/hog.zarr", "metrics"):
        a, b = (_files(root / folder) for root in two_runs)
        assert a and a == b, folder
    assert (two_runs[0] / "models" / "hog" / "model.pt").stat().st_size > 10_000


def test_stored_metadata_holds_no_path_time_or_host(two_runs: tuple[Path, Path]) -> None:
    """No absolute path, host name or clock reading in any metadata file."""
    import socket

    root = two_runs[1]
    for path in root.rglob("*.json"):
        text = path.read_text()
        assert str(root) not in text and str(two_runs[0]) not in text, path
        assert socket.gethostname() not in text, path
        assert "created" not in json.loads(text).get("attributes", {}), path
