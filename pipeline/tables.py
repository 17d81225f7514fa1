"""The paper-style error and sharpness tables of a run, as text (``invert table``).

Reads the metrics JSON files the evaluation stages write (:mod:`pipeline.evaluation`) and
lays them out as the paper's Table 1 and Fig. 5 do, beside the trivial baselines, n and
intervals. A. Dosovitskiy, T. Brox, Inverting Visual Representations with Convolutional
Networks, CVPR 2016.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.evaluation import PAPER_ERRORS
from pipeline.paper import ALEXNET, SHALLOW
from pipeline.report import standing, undertrained

__all__ = ["error_table", "sharpness_table"]

#: the paper's rows, in its order (Table 1 and Fig. 5 of the paper)
ROWS = SHALLOW + ALEXNET


def _cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "–"
    # '!': no better than a trivial predictor; '?': better than both, not clearly
    flag = {"worse": " !", "recalls": " !", "unclear": " ?"}.get(standing(m) or "", "")
    interval = ""
    if "interval_low" in m:
        interval = f" [{m['interval_low']:.2f}, {m['interval_high']:.2f}]"
    return f"{m['normalised_error']:.3f}{interval} (n={m['images']}){flag}"


def _trivial(m: dict[str, Any] | None, key: str) -> str:
    return "–" if m is None or key not in m else f"{m[key]:.3f}"


def _photos(m: dict[str, Any] | None) -> str:
    """Error on new photographs, its ratio to their mean image, n."""
    if m is None:
        return "–"
    ratio = m["normalised_error"] / m["mean_image"]
    return f"{m['normalised_error']:.3f} ({ratio:.2f}x mean, n={m['images']})"


def error_table(metrics_dir: Path, same_images: Path | None = None) -> str:
    """The paper-style error table of a run, as text (``invert table``).

    Parameters
    ----------
    metrics_dir : Path
        The evaluation metrics (``metrics/eval``: ``T.json``, ``ae_T.json``, ``ds_T.json``,
        ``mv_T.json``); ``metrics_dir/../photos`` holds the new-photograph scores.
    same_images : Path, optional
        ``figures/same_images.json`` of ``invert figures``: adds the decoders' error on
        exactly the test images [1] inverted; skipped if absent.

    Returns
    -------
    str
        One row per target (the paper's order, Table 1): the fixed decoder with its 95%
        interval and n, both trivial baselines, new photographs, autoencoder, DeePSiM, [1]
        and the paper's value (Fig. 1), then a legend.
    """
    evals = {p.stem: json.loads(p.read_text()) for p in sorted(metrics_dir.glob("*.json"))}
    same = (
        json.loads(same_images.read_text())
        if same_images is not None and same_images.is_file()
        else {}
    )
    photos_dir = metrics_dir.parent / "photos"
    photos = {p.stem: json.loads(p.read_text()) for p in sorted(photos_dir.glob("*.json"))}
    header = (
        "target",
        "ours (fixed)",
        "mean image",
        "nearest nb.",
        "new photos",
        "autoencoder",
        "DeePSiM",
        "[1] (optimisation)",
        "ours on [1]'s",
        "paper",
    )
    lines = [header]
    for target in ROWS:
        if not any(k in evals for k in (target, f"ae_{target}", f"ds_{target}", f"mv_{target}")):
            continue
        paper = PAPER_ERRORS.get(target)
        short = undertrained(evals, f"ae_{target}")
        lines.append(
            (
                target,
                _cell(evals.get(target)),
                _trivial(evals.get(target), "mean_image"),
                _trivial(evals.get(target), "nearest_neighbour"),
                _photos(photos.get(target)),
                _cell(evals.get(f"ae_{target}")) + (" ~" if short else ""),
                _cell(evals.get(f"ds_{target}")),
                _cell(evals.get(f"mv_{target}")),
                f"{same[target]['ours']:.3f}" if target in same else "–",
                "–" if paper is None else f"{paper:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    random = any(m.get("random_weights") for m in evals.values())
    text.append("")
    text.append("Normalised reconstruction error: mean ||x - x̂|| / mean distance between two")
    text.append("test images (1.0: as far as a random other test image); n = test images scored;")
    text.append("[a, b]: 95% bootstrap interval over test images.")
    text.append("Trivial predictors on the same test images: the training-mean image, and the")
    text.append("training image whose features are nearest. '!': no better than one of them;")
    text.append("'?': better than both, but its 95% interval reaches the lower one's error.")
    text.append("New photos: the decoder on crops of photographs in neither split, and its error")
    text.append("as a multiple of the training-mean image's on those crops (< 1: it generalises).")
    text.append("'~': autoencoder trained for fewer steps than the fixed decoder (undertrained).")
    text.append("DeePSiM: the fixed decoder fine-tuned with feature and adversarial losses; it")
    text.append("trades pixel error for sharpness (--sharpness shows both on the same images).")
    if same:
        text.append("ours on [1]'s: the fixed decoder on exactly the test images [1] inverted,")
        text.append("with the same denominator (the whole test split's mean distance).")
    if random:
        text.append("AlexNet rows: RANDOM weights (random:SEED), not the paper's trained CaffeNet.")
    return "\n".join(text)


def _sharp(block: dict[str, Any] | None, name: str) -> str:
    """``SSIM / hf ratio`` of one prediction set of a sharpness block."""
    if block is None or name not in block:
        return "–"
    return f"{block[name]['ssim_gaussian']:.3f} / {block[name]['hf_ratio']:.3f}"


def sharpness_table(metrics_dir: Path) -> str:
    """The sharpness block of every evaluation file as text (``invert table --sharpness``).

    Parameters
    ----------
    metrics_dir : Path
        As :func:`error_table`.

    Returns
    -------
    str
        Per store: Gaussian SSIM / high-frequency ratio of the reconstructions and of the
        trivial baselines, with n; files without a sharpness block are skipped.
    """
    evals = {p.stem: json.loads(p.read_text()) for p in sorted(metrics_dir.glob("*.json"))}
    header = ("store", "reconstructions", "mean image", "nearest nb.", "n")
    lines: list[tuple[str, ...]] = [header]
    for target in ROWS:
        for stem in (target, f"ds_{target}", f"ae_{target}", f"mv_{target}"):
            block = evals.get(stem, {}).get("sharpness")
            if block is None:
                continue
            names = ("reconstructions", "mean_image", "nearest_neighbour")
            lines.append((stem, *(_sharp(block, n) for n in names), str(block["images"])))
    if len(lines) == 1:
        return (
            f"No sharpness block in {metrics_dir}: its files predate it; rerun invert evaluate "
            "(dvc repro) to add one."
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    cutoffs = sorted({m["sharpness"]["hf_cutoff"] for m in evals.values() if "sharpness" in m})
    text.append("")
    text.append("Each cell: SSIM / hf. SSIM: mean over images, Wang et al. 2004 (11x11 Gaussian")
    cut = ", ".join(map(str, cutoffs))
    text.append(f"window, sigma 1.5, on the luma). hf: power above {cut} x Nyquist over the")
    text.append("targets' (1: as detailed as the targets, 0: flat). The training-mean image shows")
    text.append("what blur scores: high frequencies near 0, however low its normalised error.")
    text.append(
        "ds_: DeePSiM decoder; ae_: autoencoder; mv_: [1]'s optimisation (no trivial "
        "baselines); n: test images."
    )
    return "\n".join(text)
