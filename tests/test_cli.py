"""The ``invert`` command: help texts, the issue's end-to-end example, clear errors."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from click.testing import CliRunner

from pipeline import features
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


def test_extract_help_lists_every_extractors_parameters_and_defaults() -> None:
    result = CliRunner().invoke(main, ["extract", "sift", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "extract.sift cell_size: 4, backend: 'opencv', peak_threshold: 0.0" in text
    assert "edge_threshold: 10.0, levels_per_octave: 3, first_octave: 0" in text
    assert "extract.hog cell_size: 8, num_orientations: 9" in text
    assert "extract.lbp cell_size: 16" in text
    assert "extract.alexnet arch: 'caffenet'" in text
    assert text.count("extract.alexnet") == 2  # the docstring's mention and one row, not 8


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
    assert "and the families alexnet" in r.output  # what the help text also accepts
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
    assert "did you mean" not in r.output  # nothing like it beside the path
    # a typo'd path next to a real store: the store is named
    (tmp_path / "images.zarr").mkdir()
    r = runner.invoke(
        main,
        ["extract", "hog", "--images", str(tmp_path / "imgs.zarr"), "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 1, r.output
    assert f"did you mean {str(tmp_path / 'images.zarr')!r}?" in " ".join(r.output.split())
    # the extract section: a typo'd feature subsection is told apart from a typo'd key
    for key, meant in (("hgo", "hog"), ("max_failure_rat", "max_failure_rate")):
        bad.write_text(f"extract:\n  {key}: 1\n")
        r = runner.invoke(
            main,
            [
                "extract",
                "hog",
                "--images",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "o"),
                "--params",
                str(bad),
            ],
        )
        text = " ".join(r.output.split())
        assert r.exit_code == 1 and f"'{key}' (did you mean '{meant}'?)" in text, r.output
        assert "and the subsections alexnet, hog, lbp, sift" in text
    # a bad INVERT_KERNELS is refused once, before the store is even opened
    r = runner.invoke(
        main,
        ["extract", "lbp", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        env={"INVERT_KERNELS": "bogus"},
    )
    assert r.exit_code == 1 and r.output.count("INVERT_KERNELS must be one of") == 1
    assert "no store at" not in r.output and not (tmp_path / "o").exists()


def as_plain(value: object) -> object:
    """``value`` with tuples as lists (YAML has no tuples), recursively."""
    if isinstance(value, (tuple, list)):
        return [as_plain(v) for v in value]
    return value


def assert_parsed_as_written(parsed: object, written: Mapping[str, Any], where: str) -> None:
    """Every key ``written`` gives has that value in ``parsed``; nested sections likewise."""
    assert dataclasses.is_dataclass(parsed), where
    for key, value in written.items():
        got = getattr(parsed, key)
        if isinstance(value, Mapping):
            assert_parsed_as_written(got, value, f"{where}.{key}")
        else:
            assert as_plain(got) == as_plain(value), f"{where}.{key}: {got!r} != {value!r}"
            assert isinstance(got, bool) == isinstance(value, bool), f"{where}.{key}: {got!r}"


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Sections applied on top of each other; ``loader`` and ``deepsim`` subsections merge key
    by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("loader", "deepsim"):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def test_every_section_of_the_repository_params_parses_as_written() -> None:
    """Every section of params.yaml through the parser its stage calls, values as written."""
    from pipeline.baseline import BaselineParams
    from pipeline.config import SECTIONS
    from pipeline.decoders import TARGETS
    from pipeline.evaluation import EvalParams
    from pipeline.paper import FigureParams
    from pipeline.report import ReportParams
    from pipeline.training import parse_train_section
    from stages.common import read_section

    path = str(ROOT / "params.yaml")
    written = yaml.safe_load(Path(path).read_text())
    assert list(written) == list(SECTIONS)
    done: set[str] = set()

    def section(name: str) -> dict[str, Any]:
        done.add(name)
        return read_section(path, name)  # what every stage reads

    # prepare, evaluate, baseline, figures, report: one dataclass each (stages/*.py)
    for name, cls in (
        ("prepare", PrepareParams),
        ("evaluate", EvalParams),
        ("baseline", BaselineParams),
        ("figures", FigureParams),
        ("report", ReportParams),
    ):
        assert_parsed_as_written(parse(cls, section(name), section=name), written[name], name)

    # extract: the runner keys, and every registered feature's subsection
    extract = section("extract")
    subsections = {features.get(n).section for n in features.names()}
    assert {k for k, v in extract.items() if isinstance(v, dict) and k != "runner"} == subsections
    runner_keys = {k: v for k, v in extract.items() if k not in subsections}
    for name in features.names():
        run, params = parse_extract_section(extract, name)
        assert_parsed_as_written(run, runner_keys, "extract")
        own = features.get(name).section
        assert_parsed_as_written(params, extract[own], f"extract.{own}")
        assert params == features.parse_params(name, extract[own])  # train, baseline, score

    # train: common keys, train.autoencoder in autoencoder mode, then train.TARGET; with
    # --loss deepsim, train.deepsim_run last
    train = section("train")
    nested = ("autoencoder", "deepsim_run")
    common = {k: v for k, v in train.items() if k not in TARGETS and k not in nested}
    assert any(target in train for target in TARGETS) and "autoencoder" in train
    assert "deepsim" in train and "deepsim_run" in train
    for target in TARGETS:
        own = train.get(target, {})
        fixed = parse_train_section(train, target)
        assert_parsed_as_written(fixed, merged(common, own), f"train.{target}")
        ds = parse_train_section(train, target, loss="deepsim")  # `invert train --loss deepsim`
        expected_ds = merged(common, own, {"loss": "deepsim"}, train["deepsim_run"])
        assert_parsed_as_written(ds, expected_ds, f"train.{target} (deepsim)")
        ae_section = {**train, "mode": "autoencoder"}  # what `invert train --mode autoencoder` does
        ae = parse_train_section(ae_section, target)
        expected = merged(common, {"mode": "autoencoder"}, train["autoencoder"], own)
        assert_parsed_as_written(ae, expected, f"train.{target} (autoencoder)")
    assert done == set(SECTIONS)


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
