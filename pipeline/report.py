"""The HTML report of a run: error table, figures, and how the run was made.

:func:`write_report` writes ``out_dir/index.html``, one static, self-contained page (inline
CSS, no scripts, no network) that links its figures relatively from ``out_dir/figures/``, so
the folder can be copied, zipped or served as it is. It shows

1. a warning banner when the run used AlexNet with random weights or the embedded default
   photographs (:func:`provenance_warnings`) — such a run checks the pipeline, it does not
   reproduce the paper;
2. the normalised reconstruction error of every target beside the paper's value (docs/method.md §6);
3. every figure with its caption, then the training loss curves;
4. the notes, and "How this run was made": weights, data, parameters and code version.

Rendering only: the numbers and the PNGs are computed elsewhere (:mod:`pipeline.figures`).
The page carries no timestamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

__all__ = [
    "ERROR_TABLE_KEYS",
    "ReportParams",
    "provenance_warnings",
    "standing",
    "undertrained",
    "write_report",
]


@dataclass(frozen=True)
class ReportParams:
    """The ``report`` section of ``params.yaml``.

    Attributes
    ----------
    run : str
        The run's name, shown under the report's title (``"embedded default"`` in the
        committed params; a ``dvc exp run -S report.run=...`` names its variant); empty
        shows none.
    """

    run: str = ""


#: Keys of an error-table row: required, then optional (missing or None shows "—").
ERROR_TABLE_KEYS = {
    "required": ("target", "mode", "ours"),
    "optional": (
        "paper",
        "ssim",
        "psnr",
        "baseline",
        "ours_same",
        "baseline_images",
        "interval_low",
        "interval_high",
        "mean_image",
        "nearest_neighbour",
        "images",
        "photos",
        "photos_mean_image",
        "photos_images",
        "undertrained",
    ),
}

#: Provenance keys whose value names the image source (``"sample"`` is the embedded default).
_DATA_KEYS = frozenset({"data", "source", "images", "image_source", "producer"})

_CSS = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1.5em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.subtitle { color: #555; margin-top: 0; }
.run { font-size: 1.1em; }
.warning { background: #b00020; color: #fff; padding: 0.9em 1.2em; margin: 1.2em 0;
           border-radius: 4px; font-family: 'DejaVu Sans', Arial, sans-serif; }
.warning strong { font-size: 1.15em; display: block; margin-bottom: 0.3em; }
.warning p { margin: 0.25em 0; }
table { border-collapse: collapse; margin: 1em 0; font-family: 'DejaVu Sans', Arial, sans-serif;
        font-size: 0.92em; }
th, td { padding: 0.35em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th { border-bottom: 2px solid #333; background: #f4f4f4; }
td.text, th.text { text-align: left; }
td.paper { color: #444; background: #f8f8f2; }
td.worse { color: #b00020; }
td.better { color: #1b6e20; }
.footnote { font-size: 0.88em; color: #555; }
figure { margin: 1.5em 0 2.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { font-size: 0.95em; margin-top: 0.4em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.3em 1.2em; }
dt { font-weight: bold; }
dd { margin: 0; }
pre { background: #f6f6f6; padding: 0.6em 0.9em; overflow-x: auto; font-size: 0.85em;
      margin: 0; }
code { font-size: 0.92em; }
"""


# ---------------------------------------------------------------------------------------
# provenance


def _walk(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, value) pair of a nested mapping / list, depth first."""
    pairs = [(key, value)]
    if isinstance(value, Mapping):
        for k, v in value.items():
            pairs += _walk(v, str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            pairs += _walk(v, key)
    return pairs


def _is_random_weights(key: str, value: Any) -> bool:
    if key == "random_weights":
        return bool(value)
    if key == "weights":
        if isinstance(value, str):
            return value.startswith("random")
        if isinstance(value, Mapping):
            return value.get("kind") == "random"
    return False


def _is_embedded_default(key: str, value: Any) -> bool:
    if key == "embedded_default":
        return bool(value)
    if key in _DATA_KEYS:
        if isinstance(value, str):
            return value == "sample" or value.startswith("sample:")
        if isinstance(value, Mapping):
            return value.get("kind") == "sample"
    return False


def provenance_warnings(provenance: Mapping[str, Any]) -> list[str]:
    """What makes a run not the paper's, as sentences for the report's banner.

    Parameters
    ----------
    provenance : mapping
        The run's provenance, nested as the stores and checkpoints record it. Searched at
        every depth for

        - random weights: ``random_weights: true``, ``weights: "random:SEED"`` or
          ``weights: {"kind": "random", ...}`` (:func:`pipeline.alexnet.describe_weights`);
        - the embedded default data: ``embedded_default: true``, or ``data``, ``source``,
          ``images``, ``image_source`` or ``producer`` equal to ``"sample"`` or
          ``{"kind": "sample", ...}`` (:mod:`pipeline.images`).

    Returns
    -------
    list of str
        Zero, one or two warnings (random weights first).
    """
    pairs = _walk(provenance)
    found = []
    if any(_is_random_weights(k, v) for k, v in pairs):
        seeds = sorted(
            {v for k, v in pairs if k == "weights" and isinstance(v, str) and "random" in v}
        )
        which = f" ({', '.join(seeds)})" if seeds else ""
        found.append(
            f"AlexNet with RANDOM weights{which}: the CONV1–FC8 features come from an "
            "untrained network, so their reconstructions, errors and figures say nothing "
            "about the paper's trained AlexNet. Give the run a trained weights file to "
            "reproduce Figs. 2–8."
        )
    if any(_is_embedded_default(k, v) for k, v in pairs):
        found.append(
            "Embedded default data: the images are random crops of the 20 photographs "
            "shipped inside scikit-image and matplotlib, not ImageNet. Training and test "
            "images are a handful of scenes, so the errors are not comparable with the "
            "paper's. Point the image source at ImageNet to reproduce the paper."
        )
    return found


# ---------------------------------------------------------------------------------------
# input validation


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what}: expected a number or None, got {value!r}")
    return float(value)


def _parse_row(row: Mapping[str, Any], i: int) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise ConfigError(f"error_table[{i}]: expected a mapping, got {type(row).__name__}")
    required, optional = ERROR_TABLE_KEYS["required"], ERROR_TABLE_KEYS["optional"]
    missing = [k for k in required if k not in row]
    if missing:
        raise ConfigError(
            f"error_table[{i}] lacks {', '.join(missing)}; every row needs {', '.join(required)}"
        )
    unknown = sorted(set(row) - set(required) - set(optional))
    if unknown:
        raise ConfigError(
            f"error_table[{i}] has unknown keys {', '.join(map(str, unknown))}; the keys are "
            f"{', '.join(required + optional)}"
        )
    for key in ("target", "mode"):
        if not isinstance(row[key], str):
            raise ConfigError(f"error_table[{i}][{key!r}]: expected a str, got {row[key]!r}")
    parsed: dict[str, Any] = {"target": row["target"], "mode": row["mode"]}
    for key in ("ours", *optional):
        if key == "undertrained":
            parsed[key] = bool(row.get(key))
            continue
        parsed[key] = _number(row.get(key), f"error_table[{i}][{key!r}]")
    if parsed["ours"] is None:
        raise ConfigError(f"error_table[{i}]['ours'] is None; a row must carry our error")
    return parsed


def _place_figures(figures: Sequence[tuple[str, Path]], out_dir: Path) -> list[tuple[str, str]]:
    """Copy every figure into ``out_dir/figures``; (caption, relative link) pairs.

    A figure already inside ``out_dir`` is linked where it is; a copy whose name is taken
    (two ``fig.png`` from different folders) is prefixed with its position.
    """
    root = out_dir.resolve()
    checked: list[tuple[str, Path]] = []
    for i, pair in enumerate(figures):
        if len(pair) != 2:
            raise ConfigError(f"figures[{i}]: expected a (caption, png path) pair")
        caption, src = pair
        if not isinstance(caption, str):
            raise ConfigError(f"figures[{i}]: the caption must be a str, got {caption!r}")
        src = Path(src).resolve()
        if not src.is_file():
            raise ConfigError(
                f"figures[{i}]: no figure at {src}; render it (pipeline.figures) before the report"
            )
        checked.append((caption, src))
    taken = {src.relative_to(root).as_posix() for _, src in checked if src.is_relative_to(root)}
    placed = []
    for i, (caption, src) in enumerate(checked):
        if src.is_relative_to(root):
            placed.append((caption, src.relative_to(root).as_posix()))
            continue
        link = f"figures/{src.name}"
        if link in taken:
            link = f"figures/{i + 1:02d}-{src.name}"
        taken.add(link)
        (root / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / link)
        placed.append((caption, link))
    return placed


def standing(m: Mapping[str, Any]) -> str | None:
    """Where a decoder's test error stands against the trivial predictors.

    The one rule behind the report's verdicts and the error table's flags ('!', '?').

    Parameters
    ----------
    m : Mapping
        Evaluation metrics of one decoder (``normalised_error``, ``mean_image``,
        ``nearest_neighbour``, optionally ``interval_high``; :mod:`pipeline.evaluation`).

    Returns
    -------
    str or None
        ``"worse"``: error at or above the training-mean image's; ``"recalls"``: below it
        but at or above the nearest training image's in feature space (it recalls training
        images rather than inverting); ``"unclear"``: below both, but its 95% interval
        reaches the lower of the two; ``"beats"``: below both, interval included; None
        without baselines ([1]'s files).
    """
    if "mean_image" not in m:
        return None
    err, mean, nn = m["normalised_error"], m["mean_image"], m["nearest_neighbour"]
    if err >= mean:
        return "worse"
    if err >= nn:
        return "recalls"
    if m.get("interval_high") is not None and m["interval_high"] >= min(mean, nn):
        return "unclear"
    return "beats"


def undertrained(evals: dict[str, dict[str, Any]], key: str) -> bool:
    """An autoencoder trained for fewer steps than the fixed decoder of its layer.

    Parameters
    ----------
    evals : dict
        Metrics file stem -> evaluation metrics (with ``steps``).
    key : str
        ``ae_LAYER`` (anything else is never undertrained).
    """
    if not key.startswith("ae_"):
        return False
    ae, fixed = evals.get(key, {}), evals.get(key[3:], {})
    return "steps" in ae and "steps" in fixed and ae["steps"] < fixed["steps"]


# ---------------------------------------------------------------------------------------
# HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "<tr><th class='text'>Target</th><th class='text'>Mode</th><th>Ours</th>"
        "<th>95% interval</th><th>n</th>"
        "<th>Mean image</th><th>Nearest nb.</th><th>New photos (n)</th><th>Their mean image</th>"
        "<th>Paper</th><th>Ours − paper</th><th>M&amp;V [1] (n)</th><th>Ours on [1]'s images</th>"
        "<th>SSIM</th>"
        "<th>PSNR (dB)</th></tr>"
    )
    body = []
    for r in rows:
        ours, paper = r["ours"], r["paper"]
        diff, cls = None, ""
        if paper is not None and not (math.isnan(ours) or math.isnan(paper)):
            diff = ours - paper
            cls = " worse" if diff > 0 else " better"  # lower error is better
        n = r.get("photos_images")
        photo_n = "" if n is None else f" ({int(n)})"
        mv_n = r.get("baseline_images")
        mv = _fmt(r["baseline"])
        if mv_n is not None and r["baseline"] is not None:
            mv += f" ({int(mv_n)})"
        low, high = r.get("interval_low"), r.get("interval_high")
        interval = "—" if low is None or high is None else f"[{_fmt(low)}, {_fmt(high)}]"
        body.append(
            f"<tr class='row' data-target='{_e(r['target'])}' data-mode='{_e(r['mode'])}'>"
            f"<td class='text'>{_e(r['target'])}</td><td class='text'>{_e(r['mode'])}"
            f"{' (undertrained)' if r.get('undertrained') else ''}</td>"
            f"<td class='ours'>{_fmt(ours)}</td><td class='interval'>{interval}</td>"
            f"<td>{'—' if r['images'] is None else int(r['images'])}</td>"
            f"<td class='trivial'>{_fmt(r['mean_image'])}</td>"
            f"<td class='trivial'>{_fmt(r['nearest_neighbour'])}</td>"
            f"<td class='photos'>{_fmt(r.get('photos'))}{photo_n}</td>"
            f"<td class='trivial'>{_fmt(r.get('photos_mean_image'))}</td>"
            f"<td class='paper'>{_fmt(paper)}</td>"
            f"<td class='diff{cls}'>{'—' if diff is None else f'{diff:+.3f}'}</td>"
            f"<td class='baseline'>{mv}</td>"
            f"<td class='same'>{_fmt(r['ours_same'])}</td>"
            f"<td>{_fmt(r['ssim'])}</td><td>{_fmt(r['psnr'], 2)}</td></tr>"
        )
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _value_html(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
        return f"<pre>{_e(text)}</pre>"
    if value is None or isinstance(value, bool):
        value = json.dumps(value)  # true / null, as in the JSON below
    return f"<code>{_e(value)}</code>"


def _figure_html(number: int, caption: str, link: str) -> str:
    return (
        f"<figure id='fig-{number}'>\n<img src='{_e(link)}' alt='{_e(caption)}'>\n"
        f"<figcaption><b>Figure {number}.</b> {_e(caption)}</figcaption>\n</figure>"
    )


def _head_html(title: str, run: str) -> list[str]:
    """The page's lines from ``<!DOCTYPE html>`` to the subtitle and, if given, the run's name."""
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'>",
        "<head>",
        "<meta charset='utf-8'>",
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        "<p class='subtitle'>Reproduction of A. Dosovitskiy and T. Brox, “Inverting Visual "
        "Representations with Convolutional Networks”, CVPR 2016.</p>",
    ]
    if run:
        parts.append(f"<p class='run' id='run'>This run: <strong>{_e(run)}</strong></p>")
    return parts


def _warning_html(warnings: Sequence[str]) -> list[str]:
    """The banner of :func:`provenance_warnings`' messages; no lines when there are none."""
    if not warnings:
        return []
    return [
        "<div class='warning' id='warning' role='alert'>",
        "<strong>⚠ This run does not reproduce the paper</strong>",
        *(f"<p>{_e(w)}</p>" for w in warnings),
        "</div>",
    ]


def _errors_section(rows: Sequence[Mapping[str, Any]], findings: Sequence[str]) -> list[str]:
    """The "Reconstruction error" section: the table (parsed rows) and its footnote, findings."""
    parts = ["<h2 id='errors'>Reconstruction error</h2>"]
    if rows:
        parts.append(_table_html(rows))
        parts.append(
            "<p class='footnote'>Normalised error: the mean over test images of "
            "‖x − x̂‖₂, divided by the mean ‖x<sub>i</sub> − x<sub>j</sub>‖₂ over pairs of "
            "distinct test images (lower is better). “Paper”: the value of Dosovitskiy &amp; "
            "Brox (2016); “M&amp;V [1]”: the optimisation-based inversion of Mahendran &amp; "
            "Vedaldi (CVPR 2015), run on the first few test images; “ours on [1]'s images”: "
            "the decoder scored on exactly those images, with the same denominator. "
            "n: test images scored. Mean image, nearest nb.: the "
            "training-mean image, and the training image whose features are nearest, scored "
            "on the same test images — what a decoder must beat to show it learnt anything. "
            "Red: ours is higher than the paper's, green: lower.</p>"
        )
    else:
        parts.append("<p>No errors were measured in this run.</p>")
    if findings:
        parts.append("<h3 id='findings'>What this run shows</h3>")
        parts.append("<ul>" + "".join(f"<li>{_e(f)}</li>" for f in findings) + "</ul>")
    return parts


def _sharpness_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Sharpness" section: pixel-loss and DeePSiM decoders beside the trivial baselines."""
    if not rows:
        return []
    head = (
        "<tr><th class='text'>Target</th><th class='text'>Loss</th><th>Error</th>"
        "<th>SSIM</th><th>HF ratio</th><th>n</th><th>Mean image: error</th><th>SSIM</th>"
        "<th>HF ratio</th><th>Nearest nb.: SSIM</th><th>HF ratio</th>"
        "<th>New photos (n)</th></tr>"
    )
    body = []
    for r in rows:
        n = r.get("photos_images")
        photos = _fmt(r.get("photos")) + ("" if n is None else f" ({int(n)})")
        body.append(
            f"<tr class='sharp' data-target='{_e(r['target'])}' data-loss='{_e(r['loss'])}'>"
            f"<td class='text'>{_e(r['target'])}</td><td class='text'>{_e(r['loss'])}</td>"
            f"<td>{_fmt(r['error'])}</td><td>{_fmt(r['ssim'])}</td>"
            f"<td class='hf'>{_fmt(r['hf_ratio'])}</td><td>{int(r['images'])}</td>"
            f"<td class='trivial'>{_fmt(r['mean_image'])}</td>"
            f"<td class='trivial'>{_fmt(r['mean_image_ssim'])}</td>"
            f"<td class='trivial'>{_fmt(r['mean_image_hf'])}</td>"
            f"<td class='trivial'>{_fmt(r['nearest_ssim'])}</td>"
            f"<td class='trivial'>{_fmt(r['nearest_hf'])}</td><td>{photos}</td></tr>"
        )
    return [
        "<h2 id='sharpness'>Sharpness: pixel loss and DeePSiM (beyond the paper)</h2>",
        f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>",
        "<p class='footnote'>The normalised error rewards blur: the training-mean image, the "
        "blurriest prediction there is, scores well on it. SSIM (Wang et al. 2004, Gaussian "
        "window σ 1.5, on the grey image) and the high-frequency ratio (power above a quarter "
        "of the Nyquist frequency, reconstructions over originals: 1 is the originals' detail, "
        "0 a flat image) show whether the reconstructions carry the originals' detail. "
        "DeePSiM: the same generator fine-tuned with pixel + AlexNet feature + adversarial "
        "losses (Dosovitskiy &amp; Brox, NIPS 2016); same test images as its pixel row.</p>",
    ]


def _figures_section(shown: Sequence[tuple[str, str]], loss: tuple[str, str] | None) -> list[str]:
    """The "Figures" section of (caption, link) pairs, then "Training" with the loss plot."""
    parts = ["<h2 id='figures'>Figures</h2>"]
    if not shown:
        parts.append("<p>No figures were rendered in this run.</p>")
    parts += [_figure_html(i + 1, c, link) for i, (c, link) in enumerate(shown)]
    if loss is not None:
        parts.append("<h2 id='training'>Training</h2>")
        parts.append(_figure_html(len(shown) + 1, *loss))
    return parts


def _provenance_section(provenance: Mapping[str, Any]) -> list[str]:
    """The "How this run was made" section: one term and value per provenance key."""
    parts = ["<h2 id='provenance'>How this run was made</h2>", "<dl>"]
    for key, value in provenance.items():
        parts.append(f"<dt>{_e(key)}</dt><dd>{_value_html(value)}</dd>")
    parts.append("</dl>")
    return parts


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    error_table: Sequence[Mapping[str, Any]],
    figures: Sequence[tuple[str, Path]],
    provenance: Mapping[str, Any],
    notes: Sequence[str] = (),
    loss_figure: tuple[str, Path] | None = None,
    findings: Sequence[str] = (),
    run: str = "",
    sharpness: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write the run's report, ``out_dir/index.html``, and copy its figures beside it.

    Parameters
    ----------
    out_dir : str or Path
        Folder of the report (created). Figures are copied to ``out_dir/figures/``; a figure
        already inside ``out_dir`` is linked where it is.
    title : str
        Heading of the page.
    error_table : sequence of mapping
        One row per target and mode: ``target`` (str, e.g. ``"hog"``), ``mode`` (str, e.g.
        ``"fixed"`` or ``"autoencoder"``), ``ours`` (float, normalised reconstruction error),
        and optionally ``paper`` (the paper's error), ``baseline`` (Mahendran & Vedaldi's
        error) and ``baseline_images`` (its n), ``interval_low``/``interval_high`` (our
        error's 95% interval), ``ssim`` and ``psnr`` (dB) — each a float or None; see
        :data:`ERROR_TABLE_KEYS` for the rest.
    figures : sequence of (str, Path)
        Caption and PNG of every figure, in the order shown.
    provenance : mapping
        Weights, data, parameters and code version of the run (JSON-serialisable values);
        shown under "How this run was made" and searched by :func:`provenance_warnings`.
    notes : sequence of str
        Free remarks, one list item each.
    loss_figure : (str, Path), optional
        Caption and PNG of the training loss curves (:func:`pipeline.figures.loss_curves`),
        shown in their own section.
    findings : sequence of str
        What this run shows, one sentence each (e.g. which targets beat the trivial
        baselines), listed under the error table.
    run : str
        The run's name (``report.run`` of the params, e.g. ``"embedded default"``), shown
        under the title; empty: none shown.
    sharpness : sequence of mapping
        Rows of the sharpness table (:func:`pipeline.run_report.sharpness_rows`): pixel-loss
        and DeePSiM decoders' error, SSIM and high-frequency ratio beside the trivial
        baselines'; empty: no such section.

    Returns
    -------
    Path
        ``out_dir/index.html``.

    Raises
    ------
    ConfigError
        An error-table row without ``target``, ``mode`` or ``ours``, with an unknown key or a
        non-numeric value; a figure path that is not a file.
    """
    out_dir = Path(out_dir)
    rows = [_parse_row(row, i) for i, row in enumerate(error_table)]
    out_dir.mkdir(parents=True, exist_ok=True)
    all_figures = list(figures) + ([loss_figure] if loss_figure is not None else [])
    placed = _place_figures(all_figures, out_dir)
    shown, loss = (placed[:-1], placed[-1]) if loss_figure is not None else (placed, None)

    parts = _head_html(title, run)
    parts += _warning_html(provenance_warnings(provenance))
    parts += _errors_section(rows, findings)
    parts += _sharpness_section(sharpness)
    parts += _figures_section(shown, loss)
    if notes:
        parts.append("<h2 id='notes'>Notes</h2>")
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts += _provenance_section(provenance)
    parts += ["</body>", "</html>", ""]

    index = out_dir / "index.html"
    tmp = out_dir / ".index.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(index)
    return index
