"""The README's departures table and decoder table say what the code does.

Each figure checked here is read from the README and recomputed from the code, so a change
on either side without the other fails with the line to fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import decoders
from pipeline.alexnet.activations import AlexNetParams
from pipeline.alexnet.network import ARCHITECTURES
from pipeline.images import SAMPLE_PHOTOS, PrepareParams, resize_center_crop
from pipeline.pixels import PIXEL_OFFSET

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _row(what: str) -> str:
    """The departures-table row whose first cell is ``what``."""
    rows = [line for line in README.splitlines() if line.startswith(f"| {what} |")]
    assert len(rows) == 1, f"README: no single departures row '{what}'"
    return rows[0]


def test_decoder_parameter_counts() -> None:
    """The 'parameters at width 1.0' table equals decoders.parameter_count."""
    table = README.split("### Decoders (docs/method.md §4), parameters at width 1.0")[1]
    rows = re.findall(r"^\| ([a-z0-9 /]+) \| [^|]+ \| (\d+) \| ([\d,]+) \|$", table, re.M)
    seen = set()
    for names, size, count in rows:
        for target in names.split(" / "):
            assert decoders.parameter_count(target) == int(count.replace(",", "")), target
            assert decoders.output_size(target) == int(size), target
            seen.add(target)
    assert seen == set(decoders.TARGETS)


def test_caffe_mean_and_storage_dtype() -> None:
    mean = ARCHITECTURES["caffenet"].mean
    row = _row("Caffe mean")
    stated = [float(v) for v in re.findall(r"\d+\.\d+", row)]
    np.testing.assert_allclose(stated, mean, atol=5e-4)
    assert "float16" in _row("activation storage") and AlexNetParams().dtype == "float16"


def test_pixel_target_and_resize_rule() -> None:
    assert "x/255 − 0.5" in _row("pixel target") and PIXEL_OFFSET == 0.5
    row = _row("resizing")
    assert "shorter side to 256" in row and "area interpolation down, bicubic up" in row
    assert resize_center_crop(np.zeros((300, 500, 3), np.uint8), 256).shape == (256, 256, 3)


def test_embedded_default_images() -> None:
    """The embedded default is params.yaml's prepare section (through the stage's parser)."""
    from pipeline.config import load_section, parse

    row = _row("training images")
    section = load_section(Path(__file__).resolve().parents[1] / "params.yaml", "prepare")
    params = parse(PrepareParams, section, section="prepare")
    grey = sum(1 for name in SAMPLE_PHOTOS if _is_grey(name))
    assert f"crops of the {len(SAMPLE_PHOTOS)} photographs" in row
    assert f"({grey} grey" in row
    assert f"{params.train_samples} training crops" in row
    assert f"{params.test_samples} test crops of {len(params.test_photos)} others" in row
    assert all(name in row for name in params.test_photos + params.holdout_photos)


def _is_grey(name: str) -> bool:
    from pipeline.images import load_image

    image, _ = load_image(f"skimage:{name}")
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


ROOT = Path(__file__).resolve().parents[1]


def _committed(path: str) -> str:
    """``path`` as the last commit holds it (a local `dvc repro` on another CPU may differ)."""
    import subprocess

    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git clone: the README's results are checked against the last commit")
    return shown.stdout


def _metrics(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_committed(f"metrics/eval/{name}.json"))
    return data


def _cells(text: str) -> dict[str, dict[str, str]]:
    """An ``invert table`` as {target: {column: cell}} (the dashes line gives the columns)."""
    lines = text.strip().splitlines()
    dashes = lines[1]
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", dashes)]
    heads = [lines[0][a:b].strip() for a, b in spans]
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        cells = [line[a : b + 1].strip() for a, b in spans]
        rows[cells[0]] = dict(zip(heads, cells))
    return rows


def test_the_error_table_is_the_committed_metrics(tmp_path: Path) -> None:
    """The README's ``invert table`` block is what the command prints from the committed metrics.

    "ours on [1]'s" comes from ``figures/same_images.json``, a DVC output that a clone has
    only after ``dvc repro`` or ``dvc pull``; every other cell is checked.
    """
    from pipeline.tables import error_table

    for folder in ("eval", "photos"):
        (tmp_path / folder).mkdir()
        listed = _committed(f"metrics/{folder}").splitlines()[2:]  # "tree …", "", names
        for name in listed:
            (tmp_path / folder / name).write_text(_committed(f"metrics/{folder}/{name}"))
    printed = _cells(error_table(tmp_path / "eval"))
    block = README.split("## Results of the embedded default")[1].split("```")[1]
    stated = _cells(block)
    assert list(stated) == list(printed)
    for target, row in printed.items():
        for column, cell in row.items():
            if column != "ours on [1]'s":
                assert stated[target][column] == cell, (
                    f"README 'Results of the embedded default', {target} / {column}: {cell} "
                    "(paste the output of `invert table` again)"
                )


def test_the_deepsim_table_is_the_committed_metrics() -> None:
    """Each cell 'error / SSIM / hf' of the DeePSiM results table is metrics/eval/{T,ds_T}.json."""
    section = README.split("| target | pixel loss | DeePSiM (20 steps of fine-tuning) |")[1]
    rows = re.findall(r"^  \| ([A-Z0-9]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    assert [row[0] for row in rows] == ["HOG", "CONV5", "FC8"]
    for target, pixel, deepsim, mean in rows:
        for cell, name, block in (
            (pixel, target.lower(), "reconstructions"),
            (deepsim, f"ds_{target.lower()}", "reconstructions"),
            (mean, target.lower(), "mean_image"),
        ):
            m = _metrics(name)
            sharp = m["sharpness"][block]
            error = m["normalised_error"] if block == "reconstructions" else m["mean_image"]
            expected = f"{error:.3f} / {sharp['ssim_gaussian']:.3f} / {sharp['hf_ratio']:.3f}"
            assert cell.strip() == expected, f"README DeePSiM table, {target}: write {expected}"
