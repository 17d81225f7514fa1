"""``invert prepare``: images into an image store."""

from __future__ import annotations

import click

from pipeline.config import parse
from pipeline.images import PrepareParams
from pipeline.images import prepare as prepare_store
from stages.common import as_mapping, params_option, read_section, reports_errors


@click.command()
@click.option(
    "--source",
    default="sample",
    show_default=True,
    help="sample (photographs inside scikit-image), dir:PATH (every file below PATH), "
    "imagenet:PATH (train/<wnid>/*, val/), or list:FILE (one path a line).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Image store to write (Zarr v3 folder).",
)
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
@click.option("--workers", type=int, default=None, help="Parallel decode tasks (0: one per core).")
@click.option(
    "--scheduler",
    default=None,
    help="threads | processes | a dask.distributed scheduler address (tcp://host:8786).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing store made differently.")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Fail instead of waiting when another process is writing the same store.",
)
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
    address = None
    runner = as_mapping(section.get("runner"), "prepare.runner")
    if workers is not None:
        runner["workers"] = workers
    if scheduler in ("threads", "processes"):
        runner["scheduler"] = scheduler
    elif scheduler:
        address = scheduler
    section["runner"] = runner
    params = parse(PrepareParams, section, section="prepare")
    path = prepare_store(
        source, out, params, overwrite=overwrite, wait=not no_wait, scheduler_address=address
    )
    click.echo(f"image store ready: {path}")
