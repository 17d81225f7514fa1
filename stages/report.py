"""``invert report``: the HTML report of a run."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import parse
from pipeline.report import ReportParams
from pipeline.run_report import ReportInputs, make_report, run_provenance
from stages.common import (
    images_option,
    out_option,
    params_option,
    path_template,
    read_section,
    reports_errors,
)


@click.command()
@images_option("Image store.")
@click.option(
    "--alexnet-store",
    type=click.Path(file_okay=False),
    default=None,
    help="One AlexNet feature store, e.g. cache/features/alexnet/conv1.zarr: the report shows "
    "its network parameters and weights (left out where absent).",
)
@click.option(
    "--metrics",
    required=True,
    help=path_template(
        "The decoders' test metrics, e.g. metrics/eval/{name}.json.", missing_ok=True
    ),
)
@click.option(
    "--ae-metrics",
    required=True,
    help=path_template(
        "The autoencoders' ones, e.g. metrics/eval/ae_{name}.json.", missing_ok=True
    ),
)
@click.option(
    "--mv-metrics",
    required=True,
    help=path_template(
        "Those of the optimisation-based inversion [1], e.g. metrics/eval/mv_{name}.json.",
        missing_ok=True,
    ),
)
@click.option(
    "--photo-metrics",
    required=True,
    help=path_template(
        "The decoders on new photographs, e.g. metrics/photos/{name}.json.", missing_ok=True
    ),
)
@click.option(
    "--ae-photo-metrics",
    required=True,
    help=path_template(
        "The autoencoders on them, e.g. metrics/photos/ae_{name}.json.", missing_ok=True
    ),
)
@click.option(
    "--loss-curves",
    required=True,
    help=path_template(
        "The decoders' training loss logs, e.g. plots/train/{name}.csv.", missing_ok=True
    ),
)
@click.option(
    "--ae-loss-curves",
    required=True,
    help=path_template("The autoencoders' ones, e.g. plots/train/ae_{name}.csv.", missing_ok=True),
)
@click.option(
    "--ds-metrics",
    default=None,
    help=path_template(
        "The DeePSiM decoders' test metrics, e.g. metrics/eval/ds_{name}.json (the "
        "sharpness table's DeePSiM rows); without it, pixel-loss rows only.",
        missing_ok=True,
    ),
)
@click.option(
    "--ds-photo-metrics",
    default=None,
    help=path_template(
        "Theirs on new photographs, e.g. metrics/photos/ds_{name}.json.", missing_ok=True
    ),
)
@click.option(
    "--figures",
    "figures_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Figure folder made by `invert figures`.",
)
@out_option("Report folder.")
@params_option
@reports_errors
def report(
    images_path: str,
    alexnet_store: str | None,
    metrics: str,
    ae_metrics: str,
    mv_metrics: str,
    photo_metrics: str,
    ae_photo_metrics: str,
    loss_curves: str,
    ae_loss_curves: str,
    ds_metrics: str | None,
    ds_photo_metrics: str | None,
    figures_dir: str,
    out: str,
    params_file: str,
) -> None:
    """Write OUT/index.html: the error table beside the paper's values, the sharpness table
    (pixel loss and DeePSiM), every figure, the loss curves and how the run was made (data,
    weights, the whole params file).

    Reads the `report` section of the params file (`run`: the name shown under the title).
    """
    run = parse(ReportParams, read_section(params_file, "report"), section="report").run
    inputs = ReportInputs(
        metrics=metrics,
        ae_metrics=ae_metrics,
        mv_metrics=mv_metrics,
        photo_metrics=photo_metrics,
        ae_photo_metrics=ae_photo_metrics,
        loss_curves=loss_curves,
        ae_loss_curves=ae_loss_curves,
        figures=Path(figures_dir),
        ds_metrics=ds_metrics,
        ds_photo_metrics=ds_photo_metrics,
    )
    prov = run_provenance(images_path, alexnet_store, params_file)
    path = make_report(inputs=inputs, out=out, provenance=prov, run=run)
    click.echo(f"report: {path}")
    if prov.get("alexnet", {}).get("random_weights"):
        click.echo("report: its AlexNet rows come from RANDOM weights (said in its banner)")
