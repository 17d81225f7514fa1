"""``invert export`` and ``invert import``: stores to and from HDF5 files."""

from __future__ import annotations

import click

from pipeline.interchange import LAYOUTS, export_hdf5, import_hdf5
from stages.common import no_wait_option, out_option, overwrite_option, reports_errors


@click.command("export")
@click.argument("store", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hdf5"]),
    default="hdf5",
    show_default=True,
    help="File format to write.",
)
@out_option("File to write.", kind="file")
@click.option(
    "--array",
    "arrays",
    multiple=True,
    help="Export only this array (repeatable); default: all. A partial export cannot be "
    "imported back.",
)
@click.option(
    "--compression",
    type=click.Choice(["gzip", "lzf"]),
    default="gzip",
    show_default=True,
    help="gzip: every HDF5 reader (MATLAB included); lzf: faster, h5py only.",
)
@click.option("--chunk-samples", type=int, default=None, help="Samples per HDF5 chunk.")
@overwrite_option("Replace an existing file.")
@reports_errors
def export(
    store: str,
    fmt: str,
    out: str,
    arrays: tuple[str, ...],
    compression: str,
    chunk_samples: int | None,
    overwrite: bool,
) -> None:
    """Write STORE (an image or feature store) into one file.

    Reads STORE read-only (a shared cache works without DVC). Writes OUT with one dataset per
    array, chunked and compressed, streamed shard by shard; the store's attrs (provenance,
    fingerprint) become the file's attrs, nested values as JSON strings. `invert import OUT`
    gives the store back.
    """
    assert fmt == "hdf5"
    path = export_hdf5(
        store,
        out,
        arrays=arrays or None,
        chunk_samples=chunk_samples,
        compression=compression,  # type: ignore[arg-type]
        overwrite=overwrite,
    )
    click.echo(f"hdf5 file ready: {path}")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@out_option("Store to write (Zarr v3 folder).")
@click.option(
    "--kind",
    type=click.Choice(["images", "features"]),
    default=None,
    help="The kind of store expected; foreign files always give feature stores.",
)
@click.option(
    "--dataset",
    default="features",
    show_default=True,
    help="Foreign files: the dataset holding the features.",
)
@click.option(
    "--layout",
    type=click.Choice(list(LAYOUTS)),
    default="nchw",
    show_default=True,
    help="Foreign files: nchw = (N, C, h, w) as h5py sees it (Python, Caffe); matlab = "
    "written by MATLAB from an [h w C N] array (vl_hog output stacked along dim 4).",
)
@click.option(
    "--ids",
    default=None,
    help="Foreign files: dataset of sample ids (default: `ids` if present, else 0..N-1).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="train",
    show_default=True,
    help="Foreign files: the split of every sample.",
)
@click.option("--chunk-size", type=int, default=16, show_default=True, help="Samples per chunk.")
@click.option("--shard-size", type=int, default=256, show_default=True, help="Samples per shard.")
@overwrite_option()
@no_wait_option
@reports_errors
def import_(
    file: str,
    out: str,
    kind: str | None,
    dataset: str,
    layout: str,
    ids: str | None,
    split: str,
    chunk_size: int,
    shard_size: int,
    overwrite: bool,
    no_wait: bool,
) -> None:
    """Read FILE (HDF5) into a store.

    A file written by `invert export` gives its store back: same arrays, provenance and
    fingerprint, every shard checked against the sha256 recorded at export. Any other file
    (e.g. features computed in MATLAB with VLFeat) gives a feature store: features (N, C, h,
    w) float32 from --dataset, valid, ids, labels (-1), split; its provenance says producer
    `import` and records the file's name and sha256. Writes OUT resumably.
    """
    path = import_hdf5(
        file,
        out,
        kind=kind,  # type: ignore[arg-type]
        dataset=dataset,
        layout=layout,  # type: ignore[arg-type]
        ids=ids,
        split=split,  # type: ignore[arg-type]
        chunk_size=chunk_size,
        shard_size=shard_size,
        overwrite=overwrite,
        wait=not no_wait,
    )
    click.echo(f"store ready: {path}")
