"""``invert score MODEL --photos SOURCE``: a trained decoder on photographs you bring."""

from __future__ import annotations

from typing import Any

import click

from pipeline import features
from pipeline.config import parse
from pipeline.errors import ConfigError
from pipeline.evaluation import EvalParams, Photos, score_photos
from pipeline.images import PrepareParams, photo_crops
from stages.common import (
    as_mapping,
    features_option,
    images_option,
    metrics_option,
    params_option,
    read_section,
    reports_errors,
)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--photos",
    required=True,
    help="A folder of photographs, a .txt list of files, sample:NAME,NAME (photographs "
    "shipped with the dependencies), or holdout: the params file's prepare.holdout_photos.",
)
@images_option("Image store the decoder was trained with (the mean-image baseline).")
@features_option(
    "Feature store it was trained on (the nearest-neighbour baseline; not for "
    "autoencoders / online features)."
)
@metrics_option("Metrics JSON to write.")
@params_option
@reports_errors
def score(
    model: str,
    photos: str,
    images_path: str,
    features_path: str | None,
    metrics_path: str | None,
    params_file: str,
) -> None:
    """Score MODEL (a model.pt) on new photographs, beside the trivial baselines.

    Each photograph gives its centre square and `evaluate.photo_crops` random crops (seeded);
    their features are computed with the `extract` section the decoder was trained with
    (refused if it differs), decoded, and scored with the normalised error (docs/method.md §6)
    and its 95% interval, beside the training-mean image and the nearest training image in
    feature space (from --images / --features, as `invert evaluate`).
    """
    params = parse(EvalParams, read_section(params_file, "evaluate"), section="evaluate")
    loaded, photographs = load_photos(model, photos, params, params_file, metrics_path)
    m = score_photos(
        model, loaded, images_path=images_path, features_path=features_path, params=params
    )
    echo_score(m, photographs)


def load_photos(
    model: str, photos: str, params: EvalParams, params_file: str, metrics_path: str | None
) -> tuple[Photos, int]:
    """The crops of ``photos`` (a source, or ``holdout``) with the extractor params ``model``
    was trained with; and the number of photographs they come from."""
    from pipeline.checkpoints import read_model_file

    _, config = read_model_file(model)
    target = str(config["target"])
    section = features.get(target).section
    feature_params = features.parse_params(
        target,
        as_mapping(read_section(params_file, "extract").get(section), f"extract.{section}"),
    )
    if photos == "holdout":
        prepare = parse(PrepareParams, read_section(params_file, "prepare"), section="prepare")
        if not prepare.holdout_photos:
            raise ConfigError("--photos holdout: prepare.holdout_photos is empty in the params")
        photos = "sample:" + ",".join(prepare.holdout_photos)
    ids, images = photo_crops(photos, crops=params.photo_crops)
    names = tuple(dict.fromkeys(i.rpartition("#")[0] for i in ids))  # in order, once each
    return Photos(images, feature_params, metrics_path, names), len(names)


def echo_score(m: dict[str, Any], photographs: int) -> None:
    """Print one line: the error on the photographs, its interval, the baselines."""
    click.echo(
        f"{m['target']} ({m['mode']}) on {m['images']} crops of {photographs} new photographs: "
        f"normalised error {m['normalised_error']:.3f} [{m['interval_low']:.3f}, "
        f"{m['interval_high']:.3f}]; mean image {m['mean_image']:.3f}, nearest neighbour "
        f"{m['nearest_neighbour']:.3f}"
    )
    echo_sharpness(m)


def echo_sharpness(m: dict[str, Any]) -> None:
    """Print one line: SSIM / high-frequency ratio of the reconstructions and baselines."""
    block = m["sharpness"]
    cells = [
        f"{label} {block[name]['ssim_gaussian']:.3f} / {block[name]['hf_ratio']:.3f}"
        for label, name in (
            ("decoder", "reconstructions"),
            ("mean image", "mean_image"),
            ("nearest neighbour", "nearest_neighbour"),
        )
    ]
    click.echo(f"  sharpness, SSIM / high-frequency ratio: {', '.join(cells)}")
