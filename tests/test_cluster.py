"""Extraction on a real multi-process ``dask.distributed`` cluster equals the local run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from distributed import Client, LocalCluster, get_task_stream

from pipeline.extract import ExtractParams, extract_store
from pipeline.runner import RunnerParams
from pipeline.store import Store, open_store

RUN = ExtractParams(chunk_size=8, runner=RunnerParams(workers=2, batch_size=8))
ARRAYS = ("features", "valid", "ids", "labels", "split")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes of one thread each, like two cluster nodes sharing a filesystem."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,  # logging.ERROR: no worker start-up chatter in the test output
    ) as c:
        yield c


@pytest.fixture(scope="module")
def local_run(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The reference: the same extraction on local threads."""
    out = tmp_path_factory.mktemp("local") / "hog.zarr"
    return open_store(extract_store("hog", image_store, out, run=RUN))


def _assert_same_store(a: Store, b: Store) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(a.array(name)[:], b.array(name)[:])
    assert a.provenance == b.provenance
    assert a.fingerprint == b.fingerprint


def test_extract_on_a_cluster_equals_local_threads(
    cluster: LocalCluster, image_store: Path, local_run: Store, tmp_path: Path
) -> None:
    with (
        Client(cluster.scheduler_address) as client,
        get_task_stream(client) as stream,
    ):
        out = extract_store(
            "hog",
            image_store,
            tmp_path / "hog.zarr",
            run=RUN,
            scheduler_address=cluster.scheduler_address,
        )
    # every shard ran as a task on one of the worker processes, none in this process
    assert len(stream.data) == 3
    assert {t["worker"] for t in stream.data} <= set(cluster.scheduler_info["workers"])
    _assert_same_store(open_store(out), local_run)


def test_cli_extract_with_a_scheduler_address(
    cluster: LocalCluster, image_store: Path, local_run: Store, tmp_path: Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"extract": {"chunk_size": 8}}))  # the layout of RUN
    out = tmp_path / "hog.zarr"
    cmd = [sys.executable, "-m", "stages", "extract", "hog", "--images", str(image_store)]
    cmd += ["--out", str(out), "--params", str(params), "--scheduler", cluster.scheduler_address]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "feature store ready" in result.stdout
    _assert_same_store(open_store(out), local_run)
