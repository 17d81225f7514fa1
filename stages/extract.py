"""``invert extract FEATURE``: an image store into a feature store."""

from __future__ import annotations

import click

from pipeline import features
from pipeline.extract import extract_store, parse_extract_section
from stages.common import params_option, read_section, reports_errors


@click.command()
@click.argument("feature")
@click.option(
    "--images",
    "images_path",
    required=True,
    type=click.Path(file_okay=False),
    help="Image store made by `invert prepare`.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Feature store to write (Zarr v3 folder).",
)
@params_option
@click.option("--workers", type=int, default=None, help="Parallel shard tasks (0: one per core).")
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
def extract(
    feature: str,
    images_path: str,
    out: str,
    params_file: str,
    workers: int | None,
    scheduler: str | None,
    overwrite: bool,
    no_wait: bool,
) -> None:
    """Compute FEATURE for every image of an image store.

    FEATURE is a registered extractor (hog, lbp, sift). Reads the `extract` section of the
    params file: `chunk_size`, `runner`, and the FEATURE subsection with the extractor's
    parameters (paper defaults where absent). Writes OUT with arrays features (N, C, h, w)
    float32, valid, ids, labels, split; per-image failures are listed in its attrs.
    """
    features.get(feature)  # unknown names fail before any work
    section = dict(read_section(params_file, "extract") or {})
    address = None
    runner = dict(section.get("runner") or {})
    if workers is not None:
        runner["workers"] = workers
    if scheduler in ("threads", "processes"):
        runner["scheduler"] = scheduler
    elif scheduler:
        address = scheduler
    section["runner"] = runner
    run, params = parse_extract_section(section, feature)
    path = extract_store(
        feature,
        images_path,
        out,
        params=params,
        run=run,
        overwrite=overwrite,
        wait=not no_wait,
        scheduler_address=address,
    )
    click.echo(f"feature store ready: {path}")
