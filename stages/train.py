"""``invert train TARGET``: a decoder from a feature store and its image store."""

from __future__ import annotations

from dataclasses import replace

import click

from pipeline import decoders, features
from pipeline.train_params import parse_train_section
from pipeline.training import train as train_decoder
from stages.common import (
    as_mapping,
    device_option,
    features_option,
    images_option,
    metrics_option,
    out_option,
    params_option,
    read_section,
    reports_errors,
)

#: an AlexNet layer whose params are the ``extract.alexnet`` section (the comparator's network)
COMPARATOR_FAMILY = "conv5"


@click.command()
@click.argument("target", type=click.Choice(decoders.TARGETS))
@images_option("Image store (the reconstruction targets).")
@features_option("Feature store of TARGET (not needed with online: true).")
@out_option("Folder for model.pt and config.json.")
@click.option(
    "--checkpoints",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of resumable checkpoints (one subfolder per run identity).",
)
@metrics_option()
@click.option(
    "--plots",
    "plots_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Loss-curve CSV (dvc plots show).",
)
@params_option
@device_option("overrides train.device and train.TARGET.device")
@click.option(
    "--steps", type=int, default=None, help="Overrides train.steps and train.TARGET.steps."
)
@click.option(
    "--mode",
    type=click.Choice(["fixed", "autoencoder"]),
    default=None,
    help="Overrides train.mode; autoencoder also applies train.autoencoder.",
)
@click.option(
    "--loss",
    type=click.Choice(["pixel", "deepsim"]),
    default=None,
    help="Overrides train.loss and train.TARGET.loss; deepsim also applies "
    "train.deepsim_run and train.TARGET.deepsim_run.",
)
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Start from this trained decoder of TARGET (model.pt; same features and width) "
    "instead of random weights, e.g. a DeePSiM run fine-tuning the pixel-loss decoder.",
)
@reports_errors
def train(
    target: str,
    images_path: str,
    features_path: str | None,
    out: str,
    checkpoints: str,
    metrics_path: str | None,
    plots_path: str | None,
    params_file: str,
    device: str | None,
    steps: int | None,
    mode: str | None,
    loss: str | None,
    init_from: str | None,
) -> None:
    """Train the decoder that inverts TARGET (pixel MSE, Adam; docs/method.md §5).

    With `train.loss: deepsim` (or `train.TARGET.loss`), the DeePSiM objective of the
    follow-up paper instead: pixel + AlexNet feature + adversarial terms weighted by
    `train.deepsim`, the comparator network read from `extract.alexnet`.

    Reads the `train` section of the params file, with the TARGET subsection applied on
    top, and TARGET's extractor parameters from `extract` (`extract.hog`, `extract.alexnet`,
    ...: the feature store must have been made with them; online and for autoencoders they
    configure the extractor, e.g. the AlexNet arch and weights).
    Writes OUT/model.pt and OUT/config.json, the metrics JSON and the loss CSV. A killed
    run resumes from its last checkpoint when started again with the same inputs. Under
    torchrun, each rank streams its own shard order (DistributedDataParallel).
    """
    section = read_section(params_file, "train")
    if mode is not None:  # before merging: autoencoder mode applies train.autoencoder
        section["mode"] = mode
    params = parse_train_section(section, target, loss=loss)
    # flags win over every params value they name, per-target subsections included
    if device is not None:
        params = replace(params, device=device)
    if steps is not None:
        params = replace(params, steps=steps)
    extract = read_section(params_file, "extract")
    extractor_section = features.get(target).section
    feature_params = features.parse_params(
        target, as_mapping(extract.get(extractor_section), f"extract.{extractor_section}")
    )
    comparator_params = None
    if params.loss == "deepsim":  # the comparator: extract.alexnet's network (arch, weights)
        comparator_params = features.parse_params(
            COMPARATOR_FAMILY, as_mapping(extract.get("alexnet"), "extract.alexnet")
        )
    result = train_decoder(
        target,
        images_path=images_path,
        features_path=features_path,
        out=out,
        checkpoints=checkpoints,
        params=params,
        feature_params=feature_params,
        metrics_path=metrics_path,
        plots_path=plots_path,
        comparator_params=comparator_params,
        init_from=init_from,
    )
    if result.metrics.get("rank", 0) == 0:  # under torchrun only rank 0 reports
        click.echo(f"decoder ready: {result.model_path} (test loss {result.metrics['test_loss']})")
