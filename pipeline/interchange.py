"""HDF5 interchange: export a store to one HDF5 file, import an HDF5 file into a store.

HDF5 is what MATLAB (``h5read``, ``save -v7.3``), Caffe's HDF5 layers and most other tools
read and write, so it is how stores leave and enter the pipeline.

:func:`export_hdf5` writes every array of a store as a dataset of the same name at the root of
the file, streamed shard by shard (one shard of one array in memory at a time):

- chunks of ``chunk_samples`` samples (default: the store's inner chunk, so a random read
  costs the same), gzip-compressed with the byte shuffle filter (or lzf) and a fletcher32
  checksum per chunk (HDF5's counterpart of the store's crc32c);
- string arrays (``ids``, ``paths``) as variable-length UTF-8 strings (``h5py.string_dtype``),
  uncompressed (HDF5 cannot filter variable-length data);
- each dataset's attr ``dims`` and HDF5 dimension labels name its axes;
- the file's root attrs hold the store's attrs: strings and numbers as they are, everything
  else (``provenance``, ``failures``, ...) as JSON strings, listed in the attr ``json_attrs``;
- the root attr ``invert_hdf5`` (JSON) records the export: format, store layout, and the
  group ``_invert_export/sha256`` holds a sha256 of every shard of every array.

:func:`import_hdf5` reads two kinds of file into a store through
:class:`~pipeline.store.StoreWriter` (resumable, visible only when complete):

- a file made by :func:`export_hdf5`: the store comes back with the same arrays, layout,
  provenance and fingerprint, every shard checked against the sha256 recorded at export;
  :func:`~pipeline.extract.open_feature_store` accepts it as it accepted the original;
- a foreign file (features computed in MATLAB with VLFeat, a Caffe HDF5 dump): a dataset of
  features in one of the layouts of :data:`LAYOUTS` and optional ``ids``, into a feature store
  whose provenance says ``producer: "import"`` and records the source file's name and sha256.

Notes
-----
gzip (deflate) is the default because every HDF5 reader has it (MATLAB, the HDF5 C library,
h5py, HDFView); lzf is 2-4x faster to write and read but only h5py has it. Foreign files are
read shard by shard in the coordinating process (HDF5 reads serialise on one lock in h5py,
so worker threads would not help).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from pipeline.errors import ConfigError, CorruptStoreError, StoreError
from pipeline.progress import progress_bar
from pipeline.store import (
    ArraySpec,
    Store,
    StoreWriter,
    combine_hashes,
    identity_of,
    open_store,
    write_shard,
)

__all__ = ["EXPORT_FORMAT", "LAYOUTS", "export_hdf5", "import_hdf5"]

log = logging.getLogger(__name__)

#: Tag of files written by :func:`export_hdf5` (root attr ``invert_hdf5``, key ``format``).
EXPORT_FORMAT = "invert-hdf5/1"
#: gzip level: 4 is within ~2% of level 9's ratio on features at several times the speed.
GZIP_LEVEL = 4
#: Layouts of a foreign features dataset, as h5py (C order) sees it:
#: ``nchw`` — ``(N, C, h, w)``: Python, Caffe HDF5 dumps;
#: ``matlab`` — written by MATLAB (``h5write``, ``save -v7.3``) from an ``[h w C N]`` array
#: (``vl_hog`` output ``h×w×31`` stacked along the 4th dimension). MATLAB is column-major, so
#: h5py sees the dimensions reversed, ``(N, C, w, h)``; the import swaps the last two axes.
LAYOUTS = ("nchw", "matlab")
#: Store attrs that :meth:`StoreWriter.finalize` writes itself (not copied on import).
_FINALIZE_ATTRS = frozenset(
    {
        "format",
        "provenance",
        "identity",
        "fingerprint",
        "num_samples",
        "shard_size",
        "created",
        "complete",
    }
)
_HASH_GROUP = "_invert_export/sha256"


# -- helpers -------------------------------------------------------------------------------
def _is_str(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "OUTS"


def _digest(data: np.ndarray) -> str:
    """sha256 of a block of an array: dtype, shape and values (strings as JSON)."""
    h = hashlib.sha256(f"{data.shape}".encode())
    if _is_str(data.dtype):
        h.update(json.dumps([str(x) for x in data.tolist()]).encode())
    else:
        h.update(np.dtype(data.dtype).str.encode())
        h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _layout_of(store: Store, name: str) -> dict[str, Any]:
    """The :class:`ArraySpec` fields of one store array, read from its zarr metadata."""
    array = store.array(name)
    zarr_array = array.zarr_array
    codec = "raw"
    for compressor in zarr_array.compressors:
        cname = getattr(compressor, "cname", None)
        if cname is not None:
            codec = str(getattr(cname, "value", cname))
    dtype = "str" if _is_str(array.dtype) else np.dtype(array.dtype).name
    shards = array.shards
    return {
        "name": name,
        "shape": list(array.shape),
        "dtype": dtype,
        "chunk": int(array.chunks[0]),
        "shard": None if shards is None else int(shards[0]),
        "dims": list(array.attrs.get("dims", [])),
        "codec": "zstd" if dtype == "str" else codec,  # string arrays ignore the codec
    }


def _store_layout(store: Store, names: Sequence[str]) -> list[dict[str, Any]]:
    """The store's array layout, in the order its identity hash was computed with.

    The identity (:func:`pipeline.store.identity_of` of provenance and layout) depends on
    the order of the arrays, which zarr does not keep: use the ``layout`` attr where the
    store has one, else the order of the arrays that reproduces the identity.
    """
    if "layout" in store.attrs:
        return [dict(spec) for spec in store.attrs["layout"]]
    inferred = {name: _layout_of(store, name) for name in names}
    target = store.attrs.get("identity")
    provenance = store.provenance
    orders = itertools.permutations(names) if len(names) <= 8 else iter([tuple(names)])
    for order in orders:  # 8! = 40320 hashes of a small JSON: well under a second
        layout = [inferred[name] for name in order]
        if identity_of({"provenance": provenance, "layout": layout}) == target:
            return layout
    log.warning(
        "%s: no order of its arrays reproduces its identity; the imported store will have "
        "another identity (same arrays, provenance and fingerprint)",
        store.path,
    )
    return [inferred[name] for name in names]


def _spec(layout: Mapping[str, Any]) -> ArraySpec:
    return ArraySpec(
        str(layout["name"]),
        tuple(int(n) for n in layout["shape"]),
        str(layout["dtype"]),
        int(layout["chunk"]),
        None if layout["shard"] is None else int(layout["shard"]),
        tuple(str(d) for d in layout["dims"]),
        codec=layout["codec"],
    )


def _to_attr(value: Any) -> tuple[Any, bool]:
    """An HDF5 attr value for a store attr, and whether it had to be JSON-encoded."""
    if isinstance(value, (str, bool, int, float)):
        return value, False
    return json.dumps(value, sort_keys=True), True


def _from_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _atomic_target(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")


# -- export --------------------------------------------------------------------------------
def export_hdf5(
    store_path: str | Path,
    out_h5: str | Path,
    *,
    arrays: Sequence[str] | None = None,
    chunk_samples: int | None = None,
    compression: Literal["gzip", "lzf"] = "gzip",
    overwrite: bool = False,
) -> Path:
    """Write the arrays and attrs of a complete store into one HDF5 file.

    Parameters
    ----------
    store_path : str or Path
        A complete store (image or feature store); opened read-only, so a shared read-only
        cache works.
    out_h5 : str or Path
        The HDF5 file to write. It is written beside under a temporary name and renamed
        into place when complete.
    arrays : sequence of str, optional
        Only these arrays (default: all). A file with only some arrays can be read by any
        HDF5 tool but not imported back into a store.
    chunk_samples : int, optional
        Samples per HDF5 chunk; default: each array's inner chunk in the store.
    compression : {"gzip", "lzf"}
        gzip (level 4, byte shuffle) is readable everywhere (MATLAB included); lzf is faster
        but only h5py reads it.
    overwrite : bool
        Replace an existing ``out_h5``.

    Returns
    -------
    Path
        The HDF5 file.

    Raises
    ------
    StoreError
        The store is missing or incomplete, an array name is not in it, or ``out_h5`` exists
        without ``overwrite``.
    CorruptStoreError
        A chunk of the store fails its checksum (nothing is left at ``out_h5``).
    """
    store = open_store(store_path)
    out = Path(out_h5).absolute()
    if compression not in ("gzip", "lzf"):
        raise ConfigError(f"compression must be 'gzip' or 'lzf', got {compression!r}")
    if chunk_samples is not None and chunk_samples < 1:
        raise ConfigError(f"chunk_samples must be >= 1, got {chunk_samples}")
    if out.exists() and not overwrite:
        raise StoreError(f"{str(out)!r} already exists; pass --overwrite to replace it")
    names = sorted(store.group.array_keys())
    chosen = list(arrays) if arrays else names
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise StoreError(
            f"store {str(store.path)!r} has no array(s) {', '.join(map(repr, unknown))}; "
            f"it has: {', '.join(names)}"
        )
    layout = _store_layout(store, names)
    meta = {
        "format": EXPORT_FORMAT,
        "store": str(store.path),
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "arrays": chosen,
        "complete": sorted(chosen) == names,
        "layout": layout,
        "compression": compression,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_target(out)
    try:
        with h5py.File(tmp, "w") as f:
            json_attrs = []
            for key, value in store.attrs.items():
                f.attrs[key], encoded = _to_attr(value)
                if encoded:
                    json_attrs.append(key)
            f.attrs["json_attrs"] = json_attrs
            f.attrs["invert_hdf5"] = json.dumps(meta, sort_keys=True)
            for spec in layout:
                if spec["name"] in chosen:
                    _export_array(f, store, spec, chunk_samples, compression)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s to %s (%s)", store.path, out, ", ".join(chosen))
    return out


def _export_array(
    f: h5py.File,
    store: Store,
    spec: Mapping[str, Any],
    chunk_samples: int | None,
    compression: str,
) -> None:
    """Stream one store array into dataset ``spec['name']`` of ``f``, one shard at a time."""
    name = spec["name"]
    source = store.array(name)
    shape = tuple(source.shape)
    n = shape[0]
    is_str = spec["dtype"] == "str"
    chunk = max(1, min(chunk_samples or spec["chunk"], max(n, 1)))
    options: dict[str, Any] = {"chunks": (chunk, *shape[1:])}
    if not is_str:  # HDF5 filters cannot apply to variable-length strings
        options["fletcher32"] = True
        options["compression"] = compression
        options["shuffle"] = True
        if compression == "gzip":
            options["compression_opts"] = GZIP_LEVEL
    dtype = h5py.string_dtype("utf-8") if is_str else np.dtype(spec["dtype"])
    dset = f.create_dataset(name, shape=shape, dtype=dtype, **options)
    dims = list(spec["dims"])
    dset.attrs["dims"] = dims
    for axis, label in enumerate(dims):
        dset.dims[axis].label = label
    step = spec["shard"] or max(n, 1)  # one shard (or the whole small array) at a time
    hashes = []
    for start in progress_bar(range(0, n, step), desc=f"export {name}", unit="shard", leave=False):
        block = source[start : start + step]  # a bad chunk raises CorruptStoreError here
        hashes.append(_digest(block))
        dset[start : start + len(block)] = block.astype(object) if is_str else block
    f.require_group(_HASH_GROUP).create_dataset(name, data=np.array(hashes, dtype="S64"))


# -- import --------------------------------------------------------------------------------
def import_hdf5(
    in_h5: str | Path,
    out_store: str | Path,
    *,
    kind: Literal["images", "features"] | None = None,
    dataset: str = "features",
    layout: Literal["nchw", "matlab"] = "nchw",
    ids: str | None = None,
    split: Literal["train", "test"] = "train",
    chunk_size: int = 16,
    shard_size: int = 256,
    overwrite: bool = False,
    wait: bool = True,
) -> Path:
    """Read an HDF5 file into a store (resumable; the store appears only when complete).

    Parameters
    ----------
    in_h5 : str or Path
        A file made by :func:`export_hdf5`, or a foreign file with a features dataset.
    out_store : str or Path
        The store to write.
    kind : {"images", "features"}, optional
        The kind of store expected; an exported file of another kind is refused. Foreign
        files always give feature stores.
    dataset : str
        Foreign files: the features dataset.
    layout : {"nchw", "matlab"}
        Foreign files: how the features dataset is laid out (see :data:`LAYOUTS`).
    ids : str, optional
        Foreign files: a 1-D dataset of N strings or integers naming the samples. Default:
        the dataset ``ids`` when the file has one, else the sample numbers ``"0"``, ``"1"``...
    split : {"train", "test"}
        Foreign files: the split every sample is put in.
    chunk_size, shard_size : int
        Foreign files: samples per inner chunk and per shard of the store (shard a multiple
        of chunk). Exported files keep the original store's layout.
    overwrite, wait : bool
        See :class:`pipeline.store.StoreWriter`.

    Returns
    -------
    Path
        The complete store.

    Raises
    ------
    StoreError
        The file is missing, is a partial export, lacks the dataset (the message lists those
        it has), or the dataset has the wrong number of dimensions, dtype or length.
    CorruptStoreError
        A shard of an exported file no longer matches the sha256 recorded at export.
    ConfigError
        Bad arguments (layout, sizes, kind).
    """
    path = Path(in_h5)
    if not path.is_file():
        raise StoreError(f"no HDF5 file at {str(path)!r}; check the path")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise StoreError(f"{str(path)!r} is not a readable HDF5 file ({err})") from None
    with f:
        if "invert_hdf5" in f.attrs:
            return _import_export(f, path, out_store, kind=kind, overwrite=overwrite, wait=wait)
        if kind not in (None, "features"):
            raise ConfigError(
                f"{str(path)!r} was not written by `invert export`, and foreign files can only "
                "be imported as feature stores (--kind features); make image stores with "
                "`invert prepare --source dir:PATH`"
            )
        return _import_foreign(
            f,
            path,
            out_store,
            dataset=dataset,
            layout=layout,
            ids=ids,
            split=split,
            chunk_size=chunk_size,
            shard_size=shard_size,
            overwrite=overwrite,
            wait=wait,
        )


def _import_export(
    f: h5py.File,
    path: Path,
    out_store: str | Path,
    *,
    kind: str | None,
    overwrite: bool,
    wait: bool,
) -> Path:
    """Rebuild the exported store: same layout, provenance and fingerprint, shards verified."""
    meta = json.loads(_from_attr(f.attrs["invert_hdf5"]))
    if meta.get("format") != EXPORT_FORMAT:
        raise StoreError(
            f"{str(path)!r} has export format {meta.get('format')!r}; this code reads "
            f"{EXPORT_FORMAT!r} — export the store again with this version"
        )
    if not meta["complete"]:
        raise StoreError(
            f"{str(path)!r} holds only the arrays {meta['arrays']} of its store; export every "
            "array (no --array) to import it back into a store"
        )
    json_attrs = set(_from_attr(v) for v in f.attrs["json_attrs"])
    attrs = {
        key: json.loads(_from_attr(value)) if key in json_attrs else _from_attr(value)
        for key, value in f.attrs.items()
        if key not in ("json_attrs", "invert_hdf5")
    }
    provenance = attrs["provenance"]
    if kind is not None and provenance.get("kind") != kind:
        raise ConfigError(
            f"{str(path)!r} holds a {provenance.get('kind')!r} store, not a {kind!r} one; "
            "check the file or drop --kind"
        )
    specs = [_spec(s) for s in meta["layout"]]
    for spec in specs:
        if spec.name not in f:
            raise StoreError(f"{str(path)!r} lacks the exported dataset {spec.name!r}")
        if tuple(f[spec.name].shape) != spec.shape:
            raise StoreError(
                f"dataset {spec.name!r} of {str(path)!r} has shape {f[spec.name].shape}, "
                f"the export recorded {spec.shape}; the file was changed after export"
            )
    expected = {s.name: [h.decode() for h in f[_HASH_GROUP][s.name][:]] for s in specs}
    store_format = provenance.pop("store_format", None)  # StoreWriter sets the current one
    with StoreWriter(out_store, provenance, specs, overwrite=overwrite, wait=wait) as writer:
        if store_format != writer.provenance["store_format"]:
            log.warning(
                "%s was exported from store format %s; the imported store records %s",
                path,
                store_format,
                writer.provenance["store_format"],
            )
        if writer.up_to_date:
            return writer.out
        sharded = [s for s in specs if s.shard is not None]
        pending = writer.pending_shards()
        for i in progress_bar(pending, desc=f"import {path.name}", unit="shard"):
            start, stop = writer.shard_bounds(i)
            blocks = {s.name: _read_block(f, s, start, stop) for s in sharded}
            for name, block in blocks.items():
                _check_hash(path, name, i, block, expected[name][i])
            write_shard(writer.scratch, i, blocks, {"shard": i})
        for spec in specs:
            if spec.shard is None:
                block = _read_block(f, spec, 0, spec.shape[0])
                _check_hash(path, spec.name, 0, block, expected[spec.name][0])
                writer.write_small(spec.name, block)
        extra = {k: v for k, v in attrs.items() if k not in _FINALIZE_ATTRS}
        extra["imported"] = {"file": path.name, "original_identity": attrs.get("identity")}
        out = writer.finalize(fingerprint=str(attrs["fingerprint"]), attrs=extra)
    if writer.identity != attrs.get("identity"):
        log.warning(
            "%s: the imported store's identity differs from the original's (store format %s, "
            "original %s; or a layout this code does not reproduce); its arrays, provenance "
            "parameters and fingerprint are the original's",
            out,
            writer.provenance["store_format"],
            store_format,
        )
    return out


def _read_block(f: h5py.File, spec: ArraySpec, start: int, stop: int) -> np.ndarray:
    dset = f[spec.name]
    if spec.dtype == "str":
        return np.asarray(dset.asstr()[start:stop], dtype=object)
    return np.asarray(dset[start:stop], dtype=spec.dtype)


def _check_hash(path: Path, name: str, shard: int, block: np.ndarray, expected: str) -> None:
    if _digest(block) != expected:
        raise CorruptStoreError(
            f"HDF5 file {str(path)!r}, dataset {name!r}: shard {shard} does not match the "
            "sha256 recorded at export; the file changed after it was written — export the "
            "store again"
        )


def _sample_ids(f: h5py.File, path: Path, ids: str | None, n: int) -> np.ndarray:
    """The foreign file's sample ids as an (n,) object array of str."""
    if ids is None:
        if "ids" not in f:
            return np.array([str(i) for i in range(n)], dtype=object)
        ids = "ids"
    if ids not in f or not isinstance(f[ids], h5py.Dataset):
        raise StoreError(
            f"{str(path)!r} has no dataset {ids!r} for the ids; it has: "
            f"{', '.join(_datasets(f)) or 'no datasets'}"
        )
    dset = f[ids]
    if dset.ndim != 1 or dset.shape[0] != n:
        raise StoreError(
            f"ids dataset {ids!r} of {str(path)!r} has shape {dset.shape}; expected ({n},), one "
            "id per sample"
        )
    if h5py.check_string_dtype(dset.dtype) is not None or dset.dtype.kind == "S":
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in dset[:]], object)
    if dset.dtype.kind in "iu":
        return np.array([str(int(x)) for x in dset[:]], dtype=object)
    raise StoreError(
        f"ids dataset {ids!r} of {str(path)!r} has dtype {dset.dtype}; store ids as strings "
        "or integers (in MATLAB: h5write of a string array or a numeric vector)"
    )


def _datasets(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda name, node: found.append(name) if isinstance(node, h5py.Dataset) else None)
    return found


def _import_foreign(
    f: h5py.File,
    path: Path,
    out_store: str | Path,
    *,
    dataset: str,
    layout: str,
    ids: str | None,
    split: str,
    chunk_size: int,
    shard_size: int,
    overwrite: bool,
    wait: bool,
) -> Path:
    """A features dataset from another tool into a feature store with producer "import"."""
    if chunk_size < 1 or shard_size < 1 or shard_size % chunk_size:
        raise ConfigError(
            f"shard_size ({shard_size}) must be a positive multiple of chunk_size ({chunk_size})"
        )
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        raise StoreError(
            f"{str(path)!r} has no dataset {dataset!r}; it has: "
            f"{', '.join(_datasets(f)) or 'no datasets'} — pass the features dataset with "
            "--dataset NAME"
        )
    dset = f[dataset]
    expected_dims = "(N, C, h, w)" if layout == "nchw" else "MATLAB [h w C N], seen as (N, C, w, h)"
    if dset.ndim != 4:
        raise StoreError(
            f"dataset {dataset!r} of {str(path)!r} has shape {dset.shape} ({dset.ndim} "
            f"dimensions); --layout {layout} expects 4: {expected_dims}. Add the missing "
            "sample or channel axis (size 1) when writing the file"
        )
    if dset.dtype.kind not in "fiub":
        raise StoreError(
            f"dataset {dataset!r} of {str(path)!r} has dtype {dset.dtype}; features must be "
            "real numbers (they are stored as float32)"
        )
    n = int(dset.shape[0])
    if n == 0:
        raise StoreError(f"dataset {dataset!r} of {str(path)!r} holds no samples")
    per_sample = tuple(int(s) for s in dset.shape[1:])
    if layout == "matlab":
        per_sample = (per_sample[0], per_sample[2], per_sample[1])  # (C, w, h) -> (C, h, w)
    sample_ids = _sample_ids(f, path, ids, n)
    dims = ("sample", "channel", "y", "x")
    specs = [
        ArraySpec("features", (n, *per_sample), "float32", chunk_size, shard_size, dims, "lz4"),
        ArraySpec("valid", (n,), "uint8", shard_size, shard_size, ("sample",)),
        ArraySpec("ids", (n,), "str", n, None, ("sample",)),
        ArraySpec("labels", (n,), "int32", n, None, ("sample",)),
        ArraySpec("split", (n,), "uint8", n, None, ("sample",)),
    ]
    provenance = {
        "kind": "features",
        "stage": "import",
        "producer": "import",
        "source_file": path.name,
        "source_sha256": _file_sha256(path),
        "dataset": dataset,
        "layout": layout,
        "source_dtype": str(dset.dtype),
        "dims": list(dims),
    }
    with StoreWriter(out_store, provenance, specs, overwrite=overwrite, wait=wait) as writer:
        if writer.up_to_date:
            return writer.out
        for i in progress_bar(writer.pending_shards(), desc=f"import {path.name}", unit="shard"):
            start, stop = writer.shard_bounds(i)
            block = np.asarray(dset[start:stop])
            if layout == "matlab":
                block = block.transpose(0, 1, 3, 2)  # (n, C, w, h) -> (n, C, h, w)
            feats = np.ascontiguousarray(block, dtype=np.float32)
            valid = np.ones(stop - start, np.uint8)
            write_shard(
                writer.scratch,
                i,
                {"features": feats, "valid": valid},
                {"hash": _digest(feats) + _digest(valid)},
            )
        small = {
            "ids": sample_ids,
            "labels": np.full(n, -1, np.int32),
            "split": np.full(n, ("train", "test").index(split), np.uint8),
        }
        for name, data in small.items():
            writer.write_small(name, data)
        content = combine_hashes(
            [m["hash"] for m in writer.shard_meta()] + [_digest(d) for d in small.values()]
        )
        return writer.finalize(
            fingerprint=identity_of({"content": content, "identity": writer.identity}),
            attrs={
                "splits": ["train", "test"],
                "failures": [],
                "source": {"path": str(path.absolute()), "dataset": dataset, "layout": layout},
            },
        )
