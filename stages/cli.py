"""The ``invert`` command: one subcommand per pipeline stage."""

from __future__ import annotations

import click

from stages.baseline import baseline
from stages.common import setup_logging
from stages.evaluate import evaluate
from stages.extract import extract
from stages.figures import figures, report
from stages.interchange import export, import_
from stages.prepare import prepare
from stages.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="-v: progress messages, -vv: debug.")
@click.version_option(package_name="invert-pipeline")
def main(verbose: int) -> None:
    """Invert visual representations (Dosovitskiy & Brox, CVPR 2016) — offline pipeline.

    Stages, in the order `dvc repro` runs them (see dvc.yaml):

    \b
      prepare   image files -> image store  (cache/images.zarr)
      extract   image store -> feature store per feature (cache/features/NAME.zarr)
      train     feature store + image store -> decoder (models/TARGET)
      evaluate  decoder -> test reconstructions + errors (metrics/eval/TARGET.json)
      baseline  image store -> optimisation-based inversion [1] (mv_TARGET.zarr)
      figures   everything above -> the paper's figures (figures/fig*.png)
      report    metrics + figures -> report/index.html

    Interchange: export (a store -> HDF5), import (HDF5 -> a store).

    Every command reads only its own section of params.yaml and records what made each
    store; a store made differently is refused, an interrupted run resumes.
    """
    setup_logging(verbose + 1)


main.add_command(prepare)
main.add_command(extract)
main.add_command(train)
main.add_command(evaluate)
main.add_command(baseline)
main.add_command(figures)
main.add_command(report)
main.add_command(export)
main.add_command(import_)
