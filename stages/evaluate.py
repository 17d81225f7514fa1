"""``invert evaluate TARGET``: reconstructions of the test split and their errors."""

from __future__ import annotations

import click

from pipeline.config import parse
from pipeline.evaluation import EvalParams
from pipeline.evaluation import evaluate as evaluate_model
from stages.common import (
    features_option,
    images_option,
    metrics_option,
    out_option,
    params_option,
    read_section,
    reports_errors,
)
from stages.score import echo_score, echo_sharpness, load_photos


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@images_option("Image store the decoder was trained with.")
@features_option("Feature store it was trained on (not for autoencoders / online features).")
@out_option("Reconstruction store to write.")
@metrics_option()
@click.option(
    "--photos",
    default=None,
    help="Also score MODEL on these photographs, as `invert score` does: a folder, a .txt "
    "list, sample:NAME,NAME, or holdout (prepare.holdout_photos).",
)
@click.option(
    "--photo-metrics",
    "photo_metrics",
    type=click.Path(dir_okay=False),
    default=None,
    help="Metrics JSON of the --photos score.",
)
@params_option
@reports_errors
def evaluate(
    model: str,
    images_path: str,
    features_path: str | None,
    out: str,
    metrics_path: str | None,
    photos: str | None,
    photo_metrics: str | None,
    params_file: str,
) -> None:
    """Reconstruct the test split with MODEL (a model.pt) and measure the errors.

    Reads the `evaluate` section of the params file. Writes OUT (reconstructions and
    targets, uint8) and the metrics JSON: the paper's normalised reconstruction error
    (docs/method.md §6), SSIM and PSNR, with the paper's value beside ours where it gives one,
    and the trivial baselines (training-mean image, nearest training image in feature space);
    last, the sharpness of the reconstructions and of each baseline (Wang et al.'s SSIM,
    high-frequency power ratio), since the normalised error rewards blur.
    With --photos, the same decoder is also scored on new photographs (`invert score`).
    """
    params = parse(EvalParams, read_section(params_file, "evaluate"), section="evaluate")
    loaded, photographs = None, 0
    if photos is not None:  # read (and refused) before the test split is decoded
        loaded, photographs = load_photos(model, photos, params, params_file, photo_metrics)
    m = evaluate_model(
        model,
        images_path=images_path,
        features_path=features_path,
        out=out,
        metrics_path=metrics_path,
        params=params,
        photos=loaded,
    )
    how = m["mode"] if "loss" not in m else f"{m['mode']}, {m['loss']} loss"
    click.echo(
        f"{m['target']} ({how}): normalised error {m['normalised_error']:.3f}, "
        f"SSIM {m['ssim']:.3f}, PSNR {m['psnr']:.1f} dB on {m['images']} test images"
    )
    echo_sharpness(m)
    if loaded is not None:
        echo_score(m["photos"], photographs)
