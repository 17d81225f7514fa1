"""``invert table``: the paper-style error table of a run, in the terminal."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.tables import error_table, sharpness_table


@click.command()
@click.option(
    "--metrics",
    "metrics_dir",
    default="metrics/eval",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of the evaluation metrics JSON files (evaluate, evaluate_ae, "
    "evaluate_deepsim, baseline).",
)
@click.option(
    "--same-images",
    "same_images",
    default="figures/same_images.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The decoders' errors on [1]'s images (written by invert figures); skipped if absent.",
)
@click.option(
    "--sharpness",
    is_flag=True,
    help="Also print the sharpness table: SSIM and high-frequency ratio of the "
    "reconstructions and of the trivial baselines.",
)
def table(metrics_dir: str, same_images: str, sharpness: bool) -> None:
    """Print the error table of a run (what `dvc metrics show` holds, as the paper lays it out)."""
    if not Path(metrics_dir).is_dir():
        where = (
            "this folder has no dvc.yaml: run invert table from the repository root, or "
            if not Path("dvc.yaml").is_file()
            else "run dvc repro first (the evaluate stages write it), or "
        )
        raise click.UsageError(
            f"no metrics folder {metrics_dir!r}: {where}pass --metrics PATH/metrics/eval"
        )
    click.echo(error_table(Path(metrics_dir), Path(same_images)))
    if sharpness:
        click.echo("")
        click.echo(sharpness_table(Path(metrics_dir)))
