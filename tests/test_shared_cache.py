"""Two clones sharing one DVC cache: the second gets the stores from the run-cache.

A lab shares stores through DVC's own cache: every clone points ``cache.dir`` at one folder
on a shared filesystem. When a second user's ``dvc repro`` has the same command, dependencies
and params as a run already in the cache, DVC restores the outputs from its run-cache
instead of running the stage. The test proves the second clone never ran the extractor: its
``invert`` on PATH is a stub that records any call and fails.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.store import open_store

ROOT = Path(__file__).resolve().parents[1]
TARGET = "extract@hog"  # and, upstream of it, prepare
#: The shared-cache set-up a lab runs in every clone (README "Sharing the cache").
CACHE_CONFIG = [
    ["config", "cache.shared", "group"],  # cache files group-readable, folders group-writable
    ["config", "cache.type", "reflink,hardlink,symlink"],  # never a second copy of a store
]

pytestmark = pytest.mark.skipif(
    shutil.which("invert") is None, reason="the `invert` console script is not installed"
)


def _dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _clone(path: Path, cache: Path, site: Path) -> Path:
    """A fresh git + DVC repository with the pipeline's dvc.yaml and code, tiny params."""
    path.mkdir()
    shutil.copy(ROOT / "dvc.yaml", path)
    for folder in ("pipeline", "stages"):  # the stages' code deps, hashed by DVC
        shutil.copytree(ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update(limit=16, shard_size=8, chunk_size=4)  # 2 shards of 8 images
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    _dvc(path, "init", "-q")
    _dvc(path, "config", "core.site_cache_dir", str(site))  # DVC's index, kept in tmp
    _dvc(path, "cache", "dir", str(cache))
    for args in CACHE_CONFIG:
        _dvc(path, *args)
    return path


def test_second_clone_is_restored_from_the_shared_run_cache(tmp_path: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    cache, site = tmp_path / "shared-cache", tmp_path / "site"
    first = _clone(tmp_path / "alice", cache, site)
    second = _clone(tmp_path / "bob", cache, site)

    out = _dvc(first, "repro", TARGET, env=env)
    assert "Running stage 'prepare'" in out and f"Running stage '{TARGET}'" in out
    assert list((cache / "runs").iterdir())  # the run-cache entries live in the shared cache

    # the second clone: an `invert` that records any call and fails comes first on PATH
    stub = tmp_path / "stub"
    stub.mkdir()
    calls = tmp_path / "invert-calls"
    (stub / "invert").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (stub / "invert").chmod(0o755)
    stubbed = {**env, "PATH": f"{stub}{os.pathsep}{env['PATH']}"}
    out = _dvc(second, "repro", TARGET, env=stubbed)
    for stage in ("prepare", TARGET):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out
    assert not calls.exists(), "the second clone ran a stage instead of restoring it"

    for name in ("images.zarr", "features/hog.zarr"):
        a, b = open_store(first / "cache" / name), open_store(second / "cache" / name)
        # stores carry no timestamp: the stub and the links below show it was not remade
        assert a.fingerprint == b.fingerprint and dict(a.attrs) == dict(b.attrs)
        key = "images" if name == "images.zarr" else "features"
        np.testing.assert_array_equal(a.array(key)[:], b.array(key)[:])
    # the restored store is linked to the cache, not copied, and cannot be written through
    chunk = second / "cache" / "features" / "hog.zarr" / "features" / "c" / "0" / "0" / "0" / "0"
    info = chunk.lstat()
    assert chunk.is_symlink() or info.st_nlink > 1
    assert not chunk.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    folders = [p for p in (cache / "files" / "md5").iterdir() if p.is_dir()]
    assert all(p.stat().st_mode & 0o070 == 0o070 for p in folders)  # group can add entries

    # negative control: with other params the stub is called, so the check above is sound
    params = yaml.safe_load((second / "params.yaml").read_text())
    params["extract"]["hog"]["cell_size"] = 4
    (second / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", TARGET],
        cwd=second,
        env=stubbed,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "extract hog" in calls.read_text()
