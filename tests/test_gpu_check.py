"""``scripts/gpu_check.sh --dry-run``: every part of the GPU check runs, on the CPU at toy size.

The check itself waits for a machine with a GPU; this keeps it runnable until then.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "check"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    log = (out / "gpu_check.log").read_text()
    assert "done in" in log and "== torchrun" in log

    assert report["dry_run"] is True and report["device"] == "cpu"
    assert report["failed"] == []
    parts = report["parts"]
    assert sorted(parts) == ["alexnet", "deepsim", "loader", "pytest", "torchrun", "train_step"]
    assert all(part["ok"] for part in parts.values())
    # pytest -m gpu ran the six gpu tests with the CPU standing in, and skipped none
    assert parts["pytest"]["summary"].startswith("6 passed")
    for target in ("hog", "conv5"):
        step = parts["train_step"][target]
        assert step["flops_per_step"] > 0 and step["samples_per_s"] > 0
        assert step["mfu"] is None  # no peak is claimed for a CPU
    # the HOG decoder's step (256x256 output) costs more FLOPs than CONV5's (192x192)
    assert (
        parts["train_step"]["hog"]["flops_per_step"]
        > parts["train_step"]["conv5"]["flops_per_step"]
    )
    for target in ("hog", "conv5"):  # DeePSiM: the comparator's forward and backward on top
        ds = parts["deepsim"][target]
        assert ds["samples_per_s"] > 0 and ds["ratio_to_pixel"] > 1
        assert ds["losses"]["disc_trained"] == 1.0 and ds["losses"]["feature"] > 0
    assert set(parts["alexnet"]["images_per_s"]) == {"extract_stores", "activations", "forward"}
    assert all(v > 0 for v in parts["alexnet"]["images_per_s"].values())
    loader = parts["loader"]
    assert set(loader["samples_per_s_by_workers"]) == {"1", "2"}
    assert all(v > 0 for v in loader["loader_over_step"].values())
    assert parts["torchrun"]["steps"] == 2 and parts["torchrun"]["backend"] == "gloo"
    assert parts["torchrun"]["device"] == "cpu"
    ds_ddp = parts["torchrun"]["deepsim"]
    assert (
        ds_ddp["steps"] == 2
        and ds_ddp["backend"] == "gloo"
        and "--loss deepsim" in ds_ddp["command"]
    )
