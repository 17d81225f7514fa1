"""``invert prepare``: images into an image store."""

from __future__ import annotations

import click

from pipeline.config import parse
from pipeline.images import PrepareParams
from pipeline.images import prepare as prepare_store
from stages.common import (
    apply_runner_flags,
    out_option,
    params_option,
    read_section,
    reports_errors,
    runner_options,
)


@click.command()
@click.option(
    "--source",
    default="sample",
    show_default=True,
    help="sample (the photographs shipped inside the dependencies, and prepare.collages "
    "collages of the training ones), a folder or dir:PATH (every file below "
    "it), imagenet:PATH (train/<wnid>/*, val/), or a .txt file or list:FILE (one path a "
    "line). Use the prefix where a plain path is ambiguous (a folder named sample).",
)
@out_option("Image store to write (Zarr v3 folder).")
@params_option
@click.option(
    "--limit",
    type=int,
    default=None,
    help="Keep only the first N images (overrides prepare.limit).",
)
@click.option(
    "--strict",
    is_flag=True,
    default=False,
    help="Stop at the first unusable file instead of skipping and listing it.",
)
@runner_options
@reports_errors
def prepare(
    source: str,
    out: str,
    params_file: str,
    limit: int | None,
    strict: bool,
    workers: int | None,
    scheduler: str | None,
    overwrite: bool,
    no_wait: bool,
) -> None:
    """Decode, convert and resize images (256x256 RGB) into an image store.

    Reads the `prepare` section of the params file. Writes OUT with arrays images
    (N, 256, 256, 3) uint8, valid, ids, paths, labels, split; unusable files are skipped and
    listed in the store's attrs (`skipped`) unless --strict.
    """
    section = read_section(params_file, "prepare")
    if limit is not None:
        section["limit"] = limit
    if strict:
        section["strict"] = True
    address = apply_runner_flags(section, "prepare", workers, scheduler)
    params = parse(PrepareParams, section, section="prepare")
    path = prepare_store(
        source, out, params, overwrite=overwrite, wait=not no_wait, scheduler_address=address
    )
    click.echo(f"image store ready: {path}")
