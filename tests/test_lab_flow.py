"""The lab's own flow through DVC: share a cache, change code, change a parameter.

(a) Two clones of one committed state (its ``dvc.lock`` made on another machine) share a
    DVC cache directory. Clone A's ``dvc repro`` of prepare -> extract -> train -> evaluate
    computes byte-identical outputs (its ``dvc.lock`` does not change); clone B's restores
    every stage from the cache and runs none (its ``invert`` is a stub that fails).
(b) Editing ``pipeline/training.py`` makes every ``train@*`` stale and, downstream of them in
    DVC's graph, every ``evaluate@*``, the figures and the report — and no ``extract@*``.
(c) Changing ``extract.hog.cell_size`` makes ``extract@hog``, ``train@hog``,
    ``baseline@hog`` stale and the figures downstream; rerun, they use the new value.

(b) and (c) read the project's committed ``dvc.lock`` (the embedded default), which must be
current: no stage's code or params differ from it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.store import open_store

ROOT = Path(__file__).resolve().parents[1]
#: prepare -> extract -> train -> evaluate, as a lab member reproduces it. (The [1] baseline
#: is left out: its optimisation's last float bits are not yet stable from run to run, which
#: flips a few of its uint8 pixels now and then; README "Same inputs, same bytes".)
TARGETS = ["evaluate@hog", "evaluate@conv5"]
UPSTREAM = ["prepare", "extract@hog", "extract_alexnet", "train@hog", "train@conv5"]
#: The shared-cache set-up a lab runs in every clone (README "Sharing the cache").
CACHE_CONFIG = [
    ["config", "--local", "cache.shared", "group"],
    ["config", "--local", "cache.type", "reflink,hardlink,symlink"],
]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}

pytestmark = pytest.mark.skipif(
    shutil.which("invert") is None, reason="the `invert` console script is not installed"
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, ok: bool = True) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=900
    )
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, f"{' '.join(cmd)} (rc {result.returncode}):\n{out}"
    return out


def _dvc(repo: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True) -> str:
    return _run([sys.executable, "-m", "dvc", *args], repo, env, ok)


def _git(repo: Path, *args: str) -> str:
    return _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], repo)


def _project_copy(path: Path, params: dict | None = None, lock: bool = False) -> Path:
    """A git + DVC repository holding the project's dvc.yaml, code and params."""
    path.mkdir(parents=True)
    files = ["dvc.yaml", "params.yaml"] + (["dvc.lock"] if lock else [])
    for name in files:
        shutil.copy(ROOT / name, path)
    for folder in ("pipeline", "stages"):
        shutil.copytree(ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    if params is not None:
        (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _git(path, "init", "-q")
    _dvc(path, "init", "-q")
    shutil.copy(ROOT / ".dvcignore", path)  # after init, which writes its own
    return path


def _tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update(train_samples=16, test_samples=4, shard_size=8)
    params["train"].update(steps=2, batch_size=4, checkpoint_every=2, log_every=1, eval_batches=1)
    params["train"]["loader"].update(workers=0, read_size=4, block_reads=2)
    for target in ("hog", "lbp", "sift", "autoencoder"):
        params["train"].get(target, {}).pop("steps", None)
        params["train"].get(target, {}).pop("batch_size", None)
    params["baseline"].update(images=2, batch_size=2)
    params["baseline"]["inversion"]["steps"] = 2
    return params


def _configure(repo: Path, cache: Path, site: Path) -> None:
    _dvc(repo, "config", "--local", "core.site_cache_dir", str(site))  # DVC's index, in tmp
    _dvc(repo, "cache", "dir", "--local", str(cache))
    for args in CACHE_CONFIG:
        _dvc(repo, *args)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed state: code, tiny params and the dvc.lock a colleague's run wrote."""
    tmp = tmp_path_factory.mktemp("lab")
    repo = _project_copy(tmp / "origin", _tiny_params())
    _configure(repo, tmp / "colleague-cache", tmp / "colleague-site")
    _dvc(repo, "repro", *TARGETS)
    assert "cache" not in (repo / ".dvc" / "config").read_text()  # --local: not committed
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pipeline run")
    return repo


def _clone(origin: Path, path: Path, cache: Path, site: Path) -> Path:
    _git(origin.parent, "clone", "-q", str(origin), str(path))
    _configure(path, cache, site)
    return path


def test_a_second_clone_restores_every_stage_from_the_shared_cache(
    origin: Path, tmp_path: Path
) -> None:
    cache, site = tmp_path / "shared-cache", tmp_path / "site"
    alice = _clone(origin, tmp_path / "alice", cache, site)
    bob = _clone(origin, tmp_path / "bob", cache, site)

    t0 = time.perf_counter()
    out = _dvc(alice, "repro", *TARGETS)
    computed = time.perf_counter() - t0
    for stage in [*UPSTREAM, *TARGETS]:
        assert f"Running stage '{stage}'" in out, stage
    # same inputs, same bytes: Alice's outputs hash as the committed lock says
    assert _git(alice, "status", "--porcelain", "dvc.lock") == "", _git(alice, "diff")

    stub = tmp_path / "stub"
    stub.mkdir()
    calls = tmp_path / "invert-calls"
    (stub / "invert").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (stub / "invert").chmod(0o755)
    stubbed = {**ENV, "PATH": f"{stub}{os.pathsep}{ENV['PATH']}"}
    t0 = time.perf_counter()
    out = _dvc(bob, "repro", *TARGETS, env=stubbed)
    restored = time.perf_counter() - t0
    assert "Running stage" not in out and not calls.exists(), out
    print(f"compute {computed:.1f} s, restore {restored:.1f} s")  # shown with -s
    assert _git(bob, "status", "--porcelain", "dvc.lock") == ""
    assert "Data and pipelines are up to date" in _dvc(bob, "status", "--with-deps", *TARGETS)

    # a clone fed by `dvc checkout` alone is up to date too: the writers' lock files beside
    # the stores (in Alice's folders, not in the cache) are not part of any folder's hash
    assert (alice / "cache" / "features" / "alexnet" / ".conv5.zarr.lock").exists()
    carol = _clone(origin, tmp_path / "carol", cache, site)
    _dvc(carol, "checkout", "--with-deps", *TARGETS)
    assert not (carol / "cache" / "features" / "alexnet" / ".conv5.zarr.lock").exists()
    assert "Data and pipelines are up to date" in _dvc(carol, "status", "--with-deps", *TARGETS)

    for name in ("images.zarr", "features/hog.zarr", "features/alexnet/conv5.zarr"):
        a, b = open_store(alice / "cache" / name), open_store(bob / "cache" / name)
        assert a.fingerprint == b.fingerprint and a.attrs == b.attrs
    for model in ("models/hog/model.pt", "models/conv5/model.pt"):
        assert (alice / model).read_bytes() == (bob / model).read_bytes()
    # restored stores are linked to the cache, read-only, and the cache is group-writable
    chunk = next((bob / "cache" / "features" / "hog.zarr" / "features" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    assert chunk.is_symlink() or chunk.lstat().st_nlink > 1
    assert not chunk.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    folders = [p for p in (cache / "files" / "md5").iterdir() if p.is_dir()]
    assert folders and all(p.stat().st_mode & 0o070 == 0o070 for p in folders)

    # negative control: other params, and the stub is called (so the check above is sound)
    params = yaml.safe_load((bob / "params.yaml").read_text())
    params["extract"]["hog"]["num_orientations"] = 6
    (bob / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(bob, "repro", "extract@hog", env=stubbed, ok=False)
    assert "extract hog" in calls.read_text()


# -- (b), (c): staleness, against the project's committed dvc.lock ------------------------
def _stale(repo: Path) -> dict[str, set[str]]:
    """Stages whose code or params differ from dvc.lock -> what differs.

    Missing data (no outputs in this copy) is left out: only code and params count.
    """
    status = json.loads(_dvc(repo, "status", "--json").strip().splitlines()[-1])
    stale: dict[str, set[str]] = {}
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                continue
            for path, what in change.get("changed deps", {}).items():
                if path == "params.yaml" and isinstance(what, dict):  # params a stage reads
                    stale.setdefault(stage, set()).update(what)
                elif path == "params.yaml" or path.startswith(("pipeline/", "stages/")):
                    stale.setdefault(stage, set()).add(path)
    return stale


def _downstream(repo: Path, stages: set[str]) -> set[str]:
    """``stages`` and every stage downstream of them in DVC's own graph."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to what it depends on
        assert stages <= {s.name for s in graph.nodes}
        out = set(stages)
        for stage in graph.nodes:
            if stages & {s.name for s in nx.descendants(graph, stage)}:
                out.add(stage.name)
    return out


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = _project_copy(tmp_path_factory.mktemp("committed") / "repo", lock=True)
    stale = _stale(repo)
    assert not stale, (
        f"dvc.lock is not current with the code and params in {len(stale)} stage(s), e.g. "
        f"{sorted(stale)[:3]}: run `dvc repro` and commit dvc.lock"
    )
    return repo


def _names(prefix: str) -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {f"{prefix}@{k}" for k in stages[prefix]["foreach"]}


def test_b_a_training_change_makes_training_and_what_follows_stale(committed: Path) -> None:
    path = committed / "pipeline" / "training.py"
    original = path.read_text()
    path.write_text(original + "\n# a change\n")
    try:
        direct = set(_stale(committed))
        stale = _downstream(committed, direct)
    finally:
        path.write_text(original)
    assert direct == _names("train") | _names("train_ae") | _names("train_deepsim")
    expected = _names("train") | _names("evaluate") | _names("evaluate_ae") | {"figures", "report"}
    expected |= _names("evaluate_deepsim")
    assert expected <= stale
    assert not {s for s in stale if s.startswith(("extract", "prepare", "baseline"))}


def test_c_a_hog_parameter_makes_hog_stages_stale(committed: Path) -> None:
    path = committed / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    params["extract"]["hog"]["cell_size"] = 4
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        direct = _stale(committed)
        stale = _downstream(committed, set(direct))
    finally:
        path.write_text(original)
    # the report shows the whole params file, so it depends on the file itself; evaluate@hog
    # computes the HOG of the new photographs it scores (--photos)
    hog = {"extract@hog", "train@hog", "evaluate@hog", "baseline@hog", "report"}
    assert set(direct) == hog | {"train_deepsim@hog", "evaluate_deepsim@hog"}
    assert direct.pop("report") == {"params.yaml"}
    assert all(what == {"extract.hog"} for what in direct.values()), direct  # the section
    assert {"evaluate@hog", "figures", "report"} <= stale
    assert not {s for s in stale if s.endswith(("sift", "lbp", "conv5")) or s == "prepare"}


def test_c_rerun_stages_use_the_new_hog_parameters(origin: Path, tmp_path: Path) -> None:
    repo = _clone(origin, tmp_path / "carol", tmp_path / "cache", tmp_path / "site")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["extract"]["hog"]["num_orientations"] = 6
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _dvc(repo, "repro", "evaluate@hog", "baseline@hog")
    for stage in ("extract@hog", "train@hog", "evaluate@hog", "baseline@hog"):
        assert f"Running stage '{stage}'" in out, stage
    store = open_store(repo / "cache" / "features" / "hog.zarr")
    assert store.provenance["params"]["num_orientations"] == 6
    assert store.array("features").shape[1] == 3 * 6 + 4
    config = json.loads((repo / "models" / "hog" / "config.json").read_text())
    assert config["feature_params"]["num_orientations"] == 6
    mv = open_store(repo / "cache" / "reconstructions" / "mv_hog.zarr")
    assert mv.provenance["feature_params"]["num_orientations"] == 6
    # a cell size the paper's HOG decoder (32x32 cells in, Table 2) cannot take: extract and
    # [1] use it, training refuses the store with a message naming what to change
    params["extract"]["hog"]["cell_size"] = 16
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(repo, "repro", "extract@hog", "baseline@hog")
    assert (
        open_store(repo / "cache" / "features" / "hog.zarr").provenance["params"]["cell_size"] == 16
    )
    mv = open_store(repo / "cache" / "reconstructions" / "mv_hog.zarr")
    assert mv.provenance["feature_params"]["cell_size"] == 16
    out = _dvc(repo, "repro", "train@hog", ok=False)
    assert "the images must be 256x256 with the paper's cell size" in out
