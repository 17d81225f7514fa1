"""The HTML report: table beside the paper, figures linked and present, banners, screenshot."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ConfigError
from pipeline.figures import loss_curves, reconstruction_grid
from pipeline.report import provenance_warnings, write_report

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"

RANDOM_RUN = {
    "weights": "random:0",
    "data": {"source": "sample", "train_samples": 2048},
    "params": {"train": {"steps": 400, "lr": 0.0001}},
    "code_version": "0123abc",
}
PAPER_RUN = {
    "weights": {"kind": "file", "file": "bvlc_reference_caffenet.npz", "sha256": "ab" * 32},
    "random_weights": False,
    "data": {"source": "imagenet:/data/ilsvrc12"},
    "code_version": "0123abc",
}
TABLE = [
    {"target": "hog", "mode": "fixed", "ours": 0.3117, "paper": 0.24, "ssim": 0.41, "psnr": 17.23,
     "baseline": 0.63, "baseline_images": 2, "interval_low": 0.2904, "interval_high": 0.3351},
    {"target": "sift", "mode": "fixed", "ours": 0.2712, "paper": 0.28},
    {"target": "fc8", "mode": "autoencoder", "ours": 0.5, "paper": None, "ssim": None},
]  # fmt: skip


class _Tags(HTMLParser):
    """Every start tag and its attributes; the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(index: Path) -> _Tags:
    parser = _Tags()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def figure_pngs(photo_batch: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real figures and a loss plot, in a folder outside the report."""
    folder = tmp_path_factory.mktemp("figs")
    small = np.stack([np.asarray(Image.fromarray(p).resize((64, 64))) for p in photo_batch[:2]])
    grid = reconstruction_grid(
        [("Original", photo_batch[:2]), ("HOG", small)],
        folder / "fig1.png",
        title="Figure 1",
        caption="random:0; embedded default",
    )
    steps = np.arange(1, 50)
    loss = loss_curves({"hog": (steps, 1.0 / steps)}, folder / "loss.png", caption="loss")
    (folder / "other").mkdir()
    same_name = shutil.copyfile(grid, folder / "other" / "fig1.png")
    return [grid, same_name, loss]


def _report(out: Path, figs: list[Path], provenance: dict[str, Any] = RANDOM_RUN) -> Path:
    return write_report(
        out,
        title="Run report <test>",
        error_table=TABLE,
        figures=[("Shallow features & <b>HOG</b>", figs[0]), ("Same name", figs[1])],
        provenance=provenance,
        notes=["Trained 400 steps on CPU."],
        loss_figure=("Training loss", figs[2]),
        run="embedded <long> run",
    )


def test_report_table_beside_paper(figure_pngs: list[Path], tmp_path: Path) -> None:
    index = _report(tmp_path / "report", figure_pngs)
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    rows = [a for tag, a in _parse(index).tags if tag == "tr" and a.get("class") == "row"]
    assert [(r["data-target"], r["data-mode"]) for r in rows] == [
        ("hog", "fixed"),
        ("sift", "fixed"),
        ("fc8", "autoencoder"),
    ]
    # ours, n, the two trivial baselines, new photos and their mean image, the paper's value,
    # then the difference
    blank = (
        "<td>—</td><td class='trivial'>—</td><td class='trivial'>—</td>"
        "<td class='photos'>—</td><td class='trivial'>—</td>"
    )
    assert (
        "<td class='ours'>0.312</td><td class='interval'>[0.290, 0.335]</td>"
        f"{blank}<td class='paper'>0.240</td><td class='diff worse'>+0.072</td>" in page
    )
    none = "<td class='interval'>—</td>"
    assert f"<td class='ours'>0.271</td>{none}{blank}<td class='paper'>0.280</td>" in page
    assert "<td class='diff better'>-0.009</td>" in page
    assert "<td class='baseline'>0.630 (2)</td>" in page and "17.23" in page  # [1] and its n
    assert f"<td class='ours'>0.500</td>{none}{blank}<td class='paper'>—</td>" in page


def test_report_figures_exist_and_are_escaped(figure_pngs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    index = _report(out, figure_pngs)
    srcs = [a["src"] for tag, a in _parse(index).tags if tag == "img"]
    assert len(srcs) == 3
    assert len(set(srcs)) == 3  # the two fig1.png do not overwrite each other
    for src in srcs:
        assert src is not None and not src.startswith("/") and src.startswith("figures/")
        assert (out / src).is_file()
    assert (out / srcs[0]).read_bytes() == figure_pngs[0].read_bytes()
    page = index.read_text(encoding="utf-8")
    assert "<b>HOG</b>" not in page and "&lt;b&gt;HOG&lt;/b&gt;" in page
    assert "Run report &lt;test&gt;" in page
    assert "This run: <strong>embedded &lt;long&gt; run</strong>" in page
    assert "How this run was made" in page and "0123abc" in page and "Trained 400 steps" in page
    assert "Training loss" in page
    # self-contained: no script, no remote resource
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_report_rerun_is_stable(figure_pngs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    first = _report(out, figure_pngs).read_bytes()
    assert _report(out, figure_pngs).read_bytes() == first
    # figures already inside the report are linked in place, not copied again
    index = write_report(
        out,
        title="t",
        error_table=[],
        figures=[("in place", out / "figures" / "fig1.png")],
        provenance={},
        notes=[],
    )
    assert [a["src"] for tag, a in _parse(index).tags if tag == "img"] == ["figures/fig1.png"]
    assert "No errors were measured" in index.read_text(encoding="utf-8")


def test_banner_random_weights_and_embedded_default(
    figure_pngs: list[Path], tmp_path: Path
) -> None:
    index = _report(tmp_path / "r", figure_pngs, RANDOM_RUN)
    banners = [a for tag, a in _parse(index).tags if a.get("class") == "warning"]
    assert len(banners) == 1 and banners[0]["role"] == "alert"
    page = index.read_text(encoding="utf-8")
    assert "RANDOM weights (random:0)" in page and "Embedded default data" in page
    # the banner comes before the table
    assert page.index("class='warning'") < page.index("<table>")


def test_no_banner_for_a_paper_run(figure_pngs: list[Path], tmp_path: Path) -> None:
    index = _report(tmp_path / "r", figure_pngs, PAPER_RUN)
    assert not [a for tag, a in _parse(index).tags if a.get("class") == "warning"]
    assert "RANDOM" not in index.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("provenance", "expected"),
    [
        ({"features": {"fc8": {"weights": {"kind": "random", "seed": 3}}}}, ["RANDOM"]),
        ({"random_weights": True}, ["RANDOM"]),
        ({"images": {"source": "sample"}}, ["Embedded default"]),
        ({"embedded_default": True, "weights": "random:7"}, ["RANDOM", "Embedded default"]),
        (PAPER_RUN, []),
        ({}, []),
    ],
)
def test_provenance_warnings(provenance: dict[str, Any], expected: list[str]) -> None:
    found = provenance_warnings(provenance)
    assert len(found) == len(expected)
    for sentence, word in zip(found, expected):
        assert word in sentence


def test_report_validates(figure_pngs: list[Path], tmp_path: Path) -> None:
    def call(table: list[dict[str, Any]], figs: list[tuple[str, Path]] | None = None) -> None:
        write_report(
            tmp_path / "x",
            title="t",
            error_table=table,
            figures=figs or [],
            provenance={},
            notes=[],
        )

    with pytest.raises(ConfigError, match=r"error_table\[0\] lacks ours; every row needs"):
        call([{"target": "hog", "mode": "fixed"}])
    with pytest.raises(ConfigError, match=r"unknown keys papr; the keys are"):
        call([{"target": "hog", "mode": "fixed", "ours": 0.3, "papr": 0.24}])
    with pytest.raises(ConfigError, match=r"\['paper'\]: expected a number or None"):
        call([{"target": "hog", "mode": "fixed", "ours": 0.3, "paper": "0.24"}])
    with pytest.raises(ConfigError, match=r"figures\[0\]: no figure at .*render it"):
        call([], [("missing", tmp_path / "nope.png")])


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="no chromium on PATH: apt-get install -y chromium to test the report screenshot",
)
def test_screenshot_script(figure_pngs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    _report(out, figure_pngs, RANDOM_RUN)
    shot = tmp_path / "shot" / "report.png"
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out), str(shot)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        pixels = np.asarray(im.convert("RGB")).astype(int)
    assert pixels.std() > 20, "screenshot is blank"
    # the red warning banner is on screen: many pixels of its #b00020
    red = (
        (abs(pixels[..., 0] - 0xB0) < 8) & (pixels[..., 1] < 12) & (abs(pixels[..., 2] - 0x20) < 8)
    )
    assert red.sum() > 10000


def test_screenshot_script_needs_a_report(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "no " in result.stderr and "index.html" in result.stderr


def test_findings_say_which_decoders_beat_the_trivial_baselines() -> None:
    from pipeline.run_report import findings

    evals = {
        "hog": {"normalised_error": 0.6, "images": 64, "mean_image": 0.8, "nearest_neighbour": 0.7},
        "fc6": {
            "normalised_error": 0.8,
            "images": 64,
            "mean_image": 0.79,
            "nearest_neighbour": 0.9,
        },
        "conv5": {
            "normalised_error": 0.7,
            "images": 8,
            "mean_image": 0.8,
            "nearest_neighbour": 0.6,
        },
        "sift": {"normalised_error": 0.7, "images": 64},  # no baselines measured: no sentence
    }
    got = findings(evals)
    assert len(got) == 3
    assert got[0].startswith("HOG decoder: 0.600 on 64 test images — beats the mean image")
    assert "CONV5 decoder: 0.700 on 8 test images" in got[1] and "recalls training" in got[1]
    assert got[2].startswith("FC6 decoder") and "no better than the training-mean image" in got[2]
    # below the mean image, but the mean image lies inside the error's 95% interval
    evals["lbp"] = {
        **evals["hog"],
        "nearest_neighbour": 0.9,
        "normalised_error": 0.79,
        "interval_low": 0.77,
        "interval_high": 0.81,
    }
    photos = {"lbp": {"normalised_error": 0.72, "mean_image": 0.8, "images": 24}}
    lbp = next(line for line in findings(evals, photos) if line.startswith("LBP"))
    assert (
        "but its 95% interval [0.770, 0.810] reaches the mean image's 0.800: not clearly "
        "better than the mean image" in lbp
    )
    assert "on 24 crops of new photographs 0.720 against the mean image's 0.800 (0.90x)" in lbp
    # worse than the nearest neighbour comes first, whatever the interval
    evals["lbp"]["nearest_neighbour"] = 0.75
    lbp = next(line for line in findings(evals) if line.startswith("LBP"))
    assert "recalls training images" in lbp
