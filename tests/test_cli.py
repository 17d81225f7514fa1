"""The ``invert`` command: help texts, the issue's end-to-end example, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from click.testing import CliRunner

from pipeline.config import parse
from pipeline.extract import parse_extract_section
from pipeline.images import PrepareParams, prepare
from pipeline.store import open_store
from stages.cli import main
from tests.conftest import small_prepare_params

ROOT = Path(__file__).resolve().parents[1]


def test_help_says_what_each_command_reads_and_writes() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "prepare" in top.output and "extract" in top.output
    for cmd, section in (("prepare", "`prepare` section"), ("extract", "`extract` section")):
        result = runner.invoke(main, [cmd, "--help"])
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        assert section in text and "--out" in text and "Writes OUT" in text


def test_prepare_then_extract_hog(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "prepare": {
                    "train_samples": 12,
                    "test_samples": 4,
                    "shard_size": 8,
                    "chunk_size": 4,
                },
                "extract": {"chunk_size": 4, "hog": {"cell_size": 8}},
            }
        )
    )
    a, b = tmp_path / "A", tmp_path / "B"
    runner = CliRunner()
    r1 = runner.invoke(
        main, ["prepare", "--source", "sample", "--out", str(a), "--params", str(params)]
    )
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(
        main, ["extract", "hog", "--images", str(a), "--out", str(b), "--params", str(params)]
    )
    assert r2.exit_code == 0, r2.output
    group = zarr.open_group(b, mode="r")
    assert group["features"].shape == (16, 31, 32, 32)
    assert dict(group.attrs)["provenance"]["producer"] == "hog"
    # running again is a no-op that says the store is ready
    r3 = runner.invoke(
        main, ["extract", "hog", "--images", str(a), "--out", str(b), "--params", str(params)]
    )
    assert r3.exit_code == 0 and "ready" in r3.output


def test_clear_errors_before_any_work(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["extract", "hgo", "--images", "x", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "unknown feature 'hgo'" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare:\n  shard_sise: 8\n")
    r = runner.invoke(main, ["prepare", "--out", str(tmp_path / "o"), "--params", str(bad)])
    assert r.exit_code == 1 and "unknown key(s) 'shard_sise'" in r.output
    assert not (tmp_path / "o").exists()
    bad.write_text("prepare:\n  limit: many\n")
    r = runner.invoke(main, ["prepare", "--out", str(tmp_path / "o"), "--params", str(bad)])
    assert r.exit_code == 1 and "prepare.limit: expected" in r.output
    r = runner.invoke(
        main,
        ["extract", "hog", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 1 and "no store at" in r.output
    assert "invert prepare --source sample --out" in r.output  # the command that makes it


def test_every_section_of_the_repository_params_parses() -> None:
    """Every section of params.yaml through the parsers the stages use."""
    from pipeline.baseline import BaselineParams
    from pipeline.config import SECTIONS, load_section
    from pipeline.evaluation import EvalParams
    from pipeline.paper import FigureParams
    from pipeline.training import parse_train_section

    path = ROOT / "params.yaml"
    assert set(yaml.safe_load(path.read_text())) == set(SECTIONS)
    parse(PrepareParams, load_section(path, "prepare"), section="prepare")
    for name in ("hog", "sift", "lbp", "conv5"):
        parse_extract_section(load_section(path, "extract"), name)
    for target in ("hog", "sift", "lbp", "conv1", "fc8"):
        assert parse_train_section(load_section(path, "train"), target).steps >= 1
    parse(EvalParams, load_section(path, "evaluate"), section="evaluate")
    parse(BaselineParams, load_section(path, "baseline"), section="baseline")
    parse(FigureParams, load_section(path, "figures"), section="figures")


def test_sigkill_during_prepare_then_rerun_equals_clean_run(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "prepare": {
                    "train_samples": 120,
                    "test_samples": 8,
                    "shard_size": 4,
                    "chunk_size": 4,
                    "runner": {"workers": 1},
                }
            }
        )
    )
    out = tmp_path / "img.zarr"
    cmd = [sys.executable, "-m", "stages", "prepare", "--out", str(out), "--params", str(params)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(tmp_path.glob(".img.zarr.partial-*/_shards/*.json"))) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert not out.exists()
    subprocess.run(cmd, check=True, capture_output=True)
    clean = prepare(
        "sample",
        tmp_path / "clean.zarr",
        small_prepare_params(train_samples=120, test_samples=8, shard_size=4, chunk_size=4),
    )
    a, b = open_store(out), open_store(clean)
    np.testing.assert_array_equal(a.array("images")[:], b.array("images")[:])
    assert a.fingerprint == b.fingerprint


@pytest.mark.skipif(not (ROOT / ".dvc").is_dir(), reason="not a DVC checkout")
def test_dvc_yaml_lists_every_stage_input() -> None:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = spec["stages"]
    for dep in stages["prepare"]["deps"] + stages["extract"]["do"]["deps"]:
        if not dep.startswith("${"):
            path = dep.replace("${item}", "hog")
            assert (ROOT / path).exists(), path
    assert "hog" in stages["extract"]["foreach"]
