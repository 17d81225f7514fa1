"""``extract``: the runner end to end on real photographs, resume after SIGKILL, refusals."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline import features
from pipeline.errors import (
    ConfigError,
    ExtractionFailedError,
    IncompatibleStoreError,
    UnknownFeatureError,
)
from pipeline.extract import ExtractParams, extract_store, parse_extract_section
from pipeline.features.base import Extractor
from pipeline.features.hog import HogParams
from pipeline.images import prepare
from pipeline.provenance import open_feature_store
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from tests.conftest import small_prepare_params

RUN = ExtractParams(chunk_size=8, runner=RunnerParams(workers=2, batch_size=8))


def test_extract_hog_store(image_store: Path, tmp_path: Path) -> None:
    out = extract_store("hog", image_store, tmp_path / "hog.zarr", run=RUN)
    # readable with plain zarr, shaped (N, 31, 32, 32), attrs say how it was made
    group = zarr.open_group(out, mode="r")
    feats = np.asarray(group["features"][:])
    assert feats.shape == (48, 31, 32, 32) and feats.dtype == np.float32
    prov = dict(group.attrs)["provenance"]
    assert prov["producer"] == "hog" and prov["params"] == {"cell_size": 8, "num_orientations": 9}
    assert prov["input_fingerprint"] == open_store(image_store).fingerprint
    assert prov["extractor_version"] == features.get("hog").version
    # equals the Python API on the same images
    images = open_store(image_store).array("images")[:]
    np.testing.assert_array_equal(feats, features.extract("hog", images))
    ids = open_store(image_store).array("ids")[:]
    np.testing.assert_array_equal(group["ids"][:], ids)
    assert group["valid"][:].all()


def test_store_made_with_other_hog_params_is_refused(image_store: Path, tmp_path: Path) -> None:
    out = extract_store(
        "hog", image_store, tmp_path / "hog4.zarr", params=HogParams(cell_size=4), run=RUN
    )
    with pytest.raises(IncompatibleStoreError, match=r"params.cell_size: store has 4, expected 8"):
        open_feature_store(out, "hog", HogParams())
    with pytest.raises(IncompatibleStoreError, match=r"(?s)already exists.*cell_size.*--overwrite"):
        extract_store("hog", image_store, out, params=HogParams(), run=RUN)
    assert open_feature_store(out, "hog", HogParams(cell_size=4)).array("features").shape[2] == 64


def test_per_image_failures_are_recorded(
    image_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hog = features.get("hog")

    def fragile(images: np.ndarray, params: object) -> np.ndarray:
        if (images.reshape(len(images), -1).mean(axis=1) > 140).any():
            raise ValueError("too bright for this test extractor")
        return hog.compute(images, params)

    broken = Extractor(
        "hog",
        hog.version,
        hog.params_type,
        fragile,
        hog.output_shape,
        hog.dims,
        "hog that fails on bright images",
    )
    monkeypatch.setattr(features, "get", lambda name: broken)
    lenient = dataclasses.replace(RUN, max_failure_rate=0.5)
    out = extract_store("hog", image_store, tmp_path / "f.zarr", run=lenient)
    store = open_store(out)
    images = open_store(image_store).array("images")[:]
    bright = images.reshape(len(images), -1).mean(axis=1) > 140
    assert bright.any() and not bright.all()
    failed = sorted(f["index"] for f in store.attrs["failures"])
    assert failed == list(np.flatnonzero(bright))
    assert "too bright" in store.attrs["failures"][0]["error"]
    np.testing.assert_array_equal(store.array("valid")[:], (~bright).astype(np.uint8))
    assert not store.array("features")[:][bright].any()


def test_a_failure_rate_above_the_limit_stops_the_stage(
    image_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extractor failing on many images is a bug: the stage stops, good shards are kept."""
    hog = features.get("hog")
    store_images = open_store(image_store).array("images")[:]
    shard = int(open_store(image_store).attrs["shard_size"])
    bad = {store_images[k].tobytes() for k in (1, 2, 3)}  # 3 of 48 (6%) in the first shard
    calls: list[int] = []

    def fragile(images: np.ndarray, params: object) -> np.ndarray:
        calls.append(len(images))
        if any(im.tobytes() in bad for im in images):
            raise ValueError("this test extractor has a bug")
        return hog.compute(images, params)

    monkeypatch.setattr(features, "get", lambda name: dataclasses.replace(hog, compute=fragile))
    out = tmp_path / "f.zarr"
    with pytest.raises(ExtractionFailedError) as err:
        extract_store("hog", image_store, out, run=RUN)
    message = str(err.value)
    assert f"failed on 3 of {len(store_images)} images (6.2%" in message
    assert "this test extractor has a bug" in message and "max_failure_rate" in message
    assert not out.exists()  # no store that passes zeros off as data
    # fixed, the rerun redoes only the shard that had failures
    bad.clear()
    calls.clear()
    store = open_store(extract_store("hog", image_store, out, run=RUN))
    assert store.attrs["failures"] == [] and sum(calls) == shard < len(store_images)
    expected = hog.compute(store_images, HogParams())
    np.testing.assert_allclose(store.array("features")[:], expected, atol=1e-6)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stages", *args]


@pytest.fixture(scope="module")
def kill_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 images in 32 shards of 8, so a kill lands in the middle of the run."""
    out = tmp_path_factory.mktemp("kill") / "images.zarr"
    return prepare(
        "sample",
        out,
        small_prepare_params(train_samples=240, test_samples=16, shard_size=8, chunk_size=8),
    )


def test_sigkill_during_extract_then_rerun_equals_clean_run(
    kill_store: Path, tmp_path: Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  chunk_size: 8\n  runner: {workers: 1, batch_size: 8}\n")
    out = tmp_path / "hog.zarr"
    proc = subprocess.Popen(
        _cli(
            "extract",
            "hog",
            "--images",
            str(kill_store),
            "--out",
            str(out),
            "--params",
            str(params),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    done: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        done = list(tmp_path.glob(".hog.zarr.partial-*/_shards/*.json"))
        if len(done) >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists()  # nothing half-made is visible
    left = len(list(tmp_path.glob(".hog.zarr.partial-*/_shards/*.json")))
    assert 3 <= left < 32
    subprocess.run(
        _cli(
            "extract",
            "hog",
            "--images",
            str(kill_store),
            "--out",
            str(out),
            "--params",
            str(params),
        ),
        check=True,
        capture_output=True,
    )
    clean = extract_store("hog", kill_store, tmp_path / "clean.zarr", run=RUN)
    a, b = open_store(out), open_store(clean)
    for name in ("features", "valid", "ids", "labels", "split"):
        np.testing.assert_array_equal(a.array(name)[:], b.array(name)[:])
    assert a.fingerprint == b.fingerprint
    assert not list(tmp_path.glob(".hog.zarr.partial-*"))


def test_two_extractions_at_once_leave_one_intact_store(image_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "hog.zarr"
    cmd = _cli(
        "extract",
        "hog",
        "--images",
        str(image_store),
        "--out",
        str(out),
        "--params",
        str(tmp_path / "none.yaml"),
    )
    (tmp_path / "none.yaml").write_text("{}\n")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    ref = extract_store("hog", image_store, tmp_path / "ref.zarr", run=RUN)
    np.testing.assert_array_equal(
        open_store(out).array("features")[:], open_store(ref).array("features")[:]
    )


def test_unknown_feature_and_bad_params() -> None:
    with pytest.raises(
        UnknownFeatureError, match="unknown feature 'hgo'; registered features: hog"
    ):
        features.get("hgo")
    with pytest.raises(
        ConfigError,
        match=r"unknown key\(s\) 'cellsize' \(did you mean 'cell_size'\?\) in params section "
        r"'extract.hog'",
    ):
        parse_extract_section({"hog": {"cellsize": 8}}, "hog")
    with pytest.raises(ConfigError, match=r"extract.runner.workers: expected an integer"):
        parse_extract_section({"runner": {"workers": "two"}}, "hog")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'chunks'"):
        parse_extract_section({"chunks": 3}, "hog")


def test_chunk_size_follows_the_codec_unless_given() -> None:
    """Raw features: one sample per chunk (checked one by one); compressed: 16, within the shard."""
    auto = ExtractParams()
    assert auto.chunk_for("raw", 256) == 1
    assert auto.chunk_for("lz4", 256) == auto.chunk_for("zstd-fast", 2048) == 16
    assert auto.chunk_for("lz4", 8) == 8  # never more than a shard
    assert auto.chunk_for("zstd", 24) == 12  # the largest size <= 16 dividing the shard
    assert ExtractParams(chunk_size=4).chunk_for("raw", 16) == 4
    with pytest.raises(ConfigError, match="chunk_size must be >= 1 or null"):
        ExtractParams(chunk_size=0)


# -- the Python API on every core ----------------------------------------------------------
@pytest.mark.parametrize("name", ["hog", "lbp", "sift"])
def test_extract_on_every_core_equals_one_call(name: str, photo_batch: np.ndarray) -> None:
    """Parts of the batch on two threads give, bit for bit, one call on the whole batch."""
    import cv2
    import torch

    # 18 images: parts of 3 (18 / (4 * 2) rounded up), the last one shorter
    images = np.concatenate([photo_batch, photo_batch[:, ::-1], photo_batch[:, :, ::-1]] * 2)
    images = np.ascontiguousarray(images[:18])
    ext = features.get(name)
    threads = torch.get_num_threads(), cv2.getNumThreads()
    whole = ext.compute(images, ext.params_type())
    parallel = features.extract(name, images, workers=2)
    assert parallel.dtype == np.float32 and parallel.shape == whole.shape
    np.testing.assert_array_equal(parallel, whole)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == threads  # restored


def test_extract_runs_parts_at_once_with_one_thread_each(
    photo_batch: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two parts are inside the extractor at the same time, each with one torch thread."""
    import threading

    import cv2
    import torch

    hog = features.get("hog")
    both_inside = threading.Barrier(2, timeout=20)  # broken unless two calls overlap
    seen: list[tuple[int, int, int]] = []

    def compute(x: np.ndarray, p: HogParams) -> np.ndarray:
        seen.append((len(x), torch.get_num_threads(), cv2.getNumThreads()))
        both_inside.wait()
        return hog.compute(x, p)

    real_get = features.get
    fake = dataclasses.replace(hog, compute=compute)
    monkeypatch.setattr(features, "get", lambda n: fake if n == "hog" else real_get(n))
    out = features.extract("hog", np.concatenate([photo_batch] * 2), workers=2)
    # 8 images: parts of one image (8 / (4 * 2)), two at a time, each with one thread
    assert seen == [(1, 1, 1)] * 8
    np.testing.assert_array_equal(out[:4], out[4:])


def test_extract_workers_must_not_be_negative(photo_batch: np.ndarray) -> None:
    from pipeline.errors import ExtractionError

    with pytest.raises(ExtractionError, match="workers must be >= 0"):
        features.extract("lbp", photo_batch, workers=-1)
