"""``invert baseline TARGET``: the optimisation-based inversion of Mahendran & Vedaldi."""

from __future__ import annotations

import click

from pipeline import features
from pipeline.baseline import BaselineParams, run_baseline
from pipeline.config import parse
from stages.common import (
    as_mapping,
    images_option,
    metrics_option,
    out_option,
    params_option,
    read_section,
    reports_errors,
)


@click.command()
@click.argument(
    "target",
    type=click.Choice(["hog", "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]),
)
@images_option("Image store; the first test images are inverted.")
@out_option("Reconstruction store to write (mv_TARGET.zarr).")
@metrics_option()
@params_option
@reports_errors
def baseline(
    target: str, images_path: str, out: str, metrics_path: str | None, params_file: str
) -> None:
    """Invert TARGET features by gradient descent on the image ([1], docs/method.md §6).

    Reads the `baseline` section of the params file, and the representation from `extract`
    (`extract.hog` for HOG, `extract.alexnet`'s arch and weights for AlexNet layers): the
    same settings the decoders were trained on. Minimises
    ||Φ(x) − Φ0||²/||Φ0||² + λ_α||x||_α^α + λ_TV·TV(x)^β for HOG and every AlexNet layer
    (LBP and SIFT are not differentiable). Writes OUT and the metrics JSON.
    """
    params = parse(BaselineParams, read_section(params_file, "baseline"), section="baseline")
    section = features.get(target).section
    feature_params = features.parse_params(
        target, as_mapping(read_section(params_file, "extract").get(section), f"extract.{section}")
    )
    m = run_baseline(
        target,
        images_path=images_path,
        out=out,
        metrics_path=metrics_path,
        params=params,
        feature_params=feature_params,
    )
    click.echo(
        f"[1] {target}: normalised error {m['normalised_error']:.3f} on {m['images']} test images"
    )
