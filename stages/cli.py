"""The ``invert`` command: one subcommand per pipeline stage.

Subcommands are imported only when they run (:class:`LazyGroup`): ``invert extract hog``
imports the extract stage and what it uses, nothing of training or the figures. The code a
stage runs is therefore exactly its import closure, which ``dvc.yaml`` lists as the stage's
``deps`` (checked by ``tests/test_deps.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from stages.common import setup_logging

#: subcommand -> "module:attribute"; the one place a stage command is registered.
COMMANDS: dict[str, str] = {
    "prepare": "stages.prepare:prepare",
    "extract": "stages.extract:extract",
    "train": "stages.train:train",
    "evaluate": "stages.evaluate:evaluate",
    "score": "stages.score:score",
    "baseline": "stages.baseline:baseline",
    "figures": "stages.figures:figures",
    "report": "stages.report:report",
    "table": "stages.table:table",
    "export": "stages.interchange:export",
    "import": "stages.interchange:import_",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[cmd_name].partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), COMMANDS[cmd_name]
        return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
      score     decoder + photographs you bring -> errors (metrics/photos/TARGET.json)
      baseline  image store -> optimisation-based inversion [1] (mv_TARGET.zarr)
      figures   everything above -> the paper's figures (figures/fig*.png)
      report    metrics + figures -> report/index.html

    Interchange: export (a store -> HDF5), import (HDF5 -> a store).
    `invert table` prints the error table of a run.

    Every command reads only its own section of params.yaml and records what made each
    store; a store made differently is refused, an interrupted run resumes.
    """
    setup_logging(verbose + 1)
