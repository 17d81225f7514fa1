"""The README's departures table and decoder table say what the code does.

Each figure checked here is read from the README and recomputed from the code, so a change
on either side without the other fails with the line to fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

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
