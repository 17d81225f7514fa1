"""Chunked, checksummed, resumable Zarr v3 stores that record what made them.

Every store of the pipeline (the image store of ``invert prepare``, the feature stores of
``invert extract``) is a Zarr v3 group:

- per-sample arrays are **sharded** along the sample axis: inner chunks of one sample for
  uncompressed arrays (one crc32c each, so the training loader checks every sample it hands
  out) and of a few samples for compressed ones,
  shards of hundreds to thousands of samples so that a 1.2M-image store is hundreds of
  files (DVC hashes every file), not millions;
- every chunk is stored raw or Blosc-compressed (the codec is chosen per array, see
  :class:`ArraySpec`) and followed by a **crc32c** checksum, so a flipped byte is a
  :class:`~pipeline.errors.CorruptStoreError` naming the store, the array and the chunk,
  never silent garbage; shards are written and chunks read by :mod:`pipeline.shards`
  (plain zarr reads the same files);
- the group's attrs hold ``provenance`` (stage, producer, parameters, code version, input
  fingerprint, dims), an ``identity`` hash of it, a content ``fingerprint`` and
  ``complete: true`` — :func:`open_store` checks them and refuses a mismatch.

Writes go through :class:`StoreWriter`: a scratch folder beside the output (same
filesystem), named by the identity hash, where each task writes **whole shards** (zarr loses
data when two writers touch one shard) and then drops a marker file. A killed run leaves the
scratch folder; running again finishes only the shards without a marker. The scratch folder
is renamed into place only when every shard is done, so a store that is visible is complete.
An exclusive lock file beside the output makes a second run of the same write wait (or fail
with ``wait=False``) instead of corrupting the first.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from pipeline.errors import CorruptStoreError, IncompatibleStoreError, StoreBusyError, StoreError
from pipeline.shards import ShardLayout, ShardReader, crc32c_of, write_shard_file

__all__ = [
    "STORE_FORMAT",
    "ArraySpec",
    "CheckedArray",
    "Store",
    "StoreWriter",
    "content_digest",
    "identity_of",
    "open_store",
    "write_shard",
]

log = logging.getLogger(__name__)

#: Format tag in every store's attrs; bumped when the layout changes incompatibly.
STORE_FORMAT = "invert-store/1"
#: Blosc-zstd level: level 3 is within a few % of level 9's ratio on features at ~4x the speed.
ZSTD_LEVEL = 3
#: Blosc-zstd level of ``zstd-fast``: half level 3's encoding time on ReLU activations for a
#: ratio 1-2 points worse (0.31 vs 0.30 of float32 on CONV5-FC7).
ZSTD_FAST_LEVEL = 1
#: Blosc-lz4 level (lz4's levels trade little ratio for speed; 5 is Blosc's default).
LZ4_LEVEL = 5
_SHARDS_DIR = "_shards"  # marker files of finished shards inside the scratch folder


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def identity_of(provenance: Mapping[str, Any]) -> str:
    """The hash that says which stores are interchangeable.

    Parameters
    ----------
    provenance : mapping
        Stage, producer, parameters, code version, input fingerprint, layout.

    Returns
    -------
    str
        Hex sha256 of the canonical JSON of ``provenance``.
    """
    return hashlib.sha256(_canonical(provenance).encode()).hexdigest()


@dataclass(frozen=True)
class ArraySpec:
    """One array of a store.

    Attributes
    ----------
    name : str
        Array name inside the group (``"images"``, ``"features"``).
    shape : tuple of int
        Full shape; axis 0 is the sample axis.
    dtype : str
        numpy dtype name.
    chunk : int
        Samples per inner chunk: the unit of compression and of the crc32c (1: every
        sample checked on its own, see :mod:`pipeline.loader`).
    shard : int or None
        Samples per shard file (the unit of a write task); ``None``: not sharded, written
        whole by the coordinating process (small per-sample arrays: ids, labels).
    dims : tuple of str
        Dimension names, one per axis.
    codec : {"zstd", "zstd-fast", "lz4", "lz4-shuffle", "raw"}
        Blosc-zstd with byte shuffle (level 3, or 1 for ``zstd-fast``: sparse activations),
        Blosc-lz4 with bit shuffle (mostly-empty float maps: SIFT) or with byte shuffle
        (``lz4-shuffle``: float16 CONV1–CONV4 activations, 3x faster to write than
        ``zstd-fast`` for 35% instead of 30% of float32), or no compression (``raw``: dense
        features, photographs). Every chunk also carries a crc32c checksum.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    chunk: int
    shard: int | None
    dims: tuple[str, ...]
    codec: Literal["zstd", "zstd-fast", "lz4", "lz4-shuffle", "raw"] = "zstd"

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.shape):
            raise StoreError(f"array {self.name!r}: {len(self.dims)} dims for shape {self.shape}")
        if self.shard is not None and self.shard % self.chunk:
            raise StoreError(
                f"array {self.name!r}: shard size {self.shard} is not a multiple of the chunk "
                f"size {self.chunk}; choose shard_size as a multiple of chunk_size"
            )

    def create(self, group: zarr.Group) -> zarr.Array:
        """Create the array in ``group`` (overwriting one of the same name)."""
        chunks = (min(self.chunk, max(self.shape[0], 1)), *self.shape[1:])
        shards = None
        if self.shard is not None:
            shards = (self.shard, *self.shape[1:])
            chunks = (self.chunk, *self.shape[1:])
        if np.dtype(self.dtype).kind in "OUT":
            array = group.create_array(
                self.name,
                shape=self.shape,
                dtype=str,
                chunks=chunks,
                overwrite=True,
                attributes={"dims": list(self.dims)},
            )
        else:
            itemsize = np.dtype(self.dtype).itemsize
            compressors: list[Any] = [Crc32cCodec()]
            if self.codec in ("zstd", "zstd-fast"):
                shuffle: Literal["noshuffle", "shuffle", "bitshuffle"]
                shuffle = "shuffle" if itemsize > 1 else "noshuffle"
                level = ZSTD_LEVEL if self.codec == "zstd" else ZSTD_FAST_LEVEL
                compressors.insert(0, BloscCodec(cname="zstd", clevel=level, shuffle=shuffle))
            elif self.codec in ("lz4", "lz4-shuffle"):
                shuffle = "noshuffle" if itemsize == 1 else "bitshuffle"
                if self.codec == "lz4-shuffle" and itemsize > 1:
                    shuffle = "shuffle"
                compressors.insert(0, BloscCodec(cname="lz4", clevel=LZ4_LEVEL, shuffle=shuffle))
            array = group.create_array(
                self.name,
                shape=self.shape,
                dtype=self.dtype,
                chunks=chunks,
                shards=shards,
                compressors=compressors,
                fill_value=0,
                overwrite=True,
                attributes={"dims": list(self.dims)},
            )
        return array


def _sample_slice(selection: Any, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(start, stop)`` when ``selection`` takes whole samples ``start:stop``, else None."""
    if selection is Ellipsis:
        return 0, shape[0]
    if isinstance(selection, tuple):
        whole = (isinstance(s, slice) and s == slice(None) for s in selection[1:])
        if not selection or not all(whole):
            return None
        selection = selection[0]
    if not isinstance(selection, slice) or selection.step not in (None, 1):
        return None
    start, stop, _ = selection.indices(shape[0])
    return start, max(start, stop)


class CheckedArray:
    """A read-only view of a store array that turns checksum failures into clear errors.

    Indexing reads like a zarr array. A chunk whose bytes no longer match their crc32c
    raises :class:`CorruptStoreError` naming the store, the array and the chunk. Sharded
    numeric arrays (every per-sample array of a store) are read by
    :class:`pipeline.shards.ShardReader` without zarr's front end; zarr opens the array only
    for anything else.

    Parameters
    ----------
    store_path : Path
        The store folder.
    name : str
        The array's name in the store.
    """

    def __init__(self, store_path: Path, name: str) -> None:
        self._store_path = store_path
        self._name = name
        layout = ShardLayout.load(store_path / name)
        where = f"store {str(store_path)!r}, array {name!r}"
        self._reader = None if layout is None else ShardReader(layout, where)
        self._zarr: zarr.Array | None = None

    @property
    def zarr_array(self) -> zarr.Array:
        """The underlying zarr array (no checksum translation)."""
        if self._zarr is None:
            self._zarr = zarr.open_array(self._store_path / self._name, mode="r")
        return self._zarr

    def sample_rows(self, start: int, stop: int) -> tuple[np.ndarray, list[int] | None]:
        """Samples ``start:stop`` and the crc32c each one's copy must have (the loader's read).

        See :meth:`pipeline.shards.ShardReader.sample_rows`: with one sample per raw chunk
        the samples are an unverified view of the mapped file and a copy of sample ``i``
        must have crc32c ``crcs[i - start]`` (else raise :meth:`corrupt_sample`); otherwise
        ``crcs`` is ``None`` and the samples are verified already.
        """
        if self._reader is not None:
            return self._reader.sample_rows(start, stop)
        return self[start:stop], None

    def corrupt_sample(self, sample: int) -> CorruptStoreError:
        """The error to raise when a copy of ``sample`` does not match its crc32c."""
        if self._reader is not None:
            return self._reader.corrupt_sample(sample)
        return CorruptStoreError(
            f"store {str(self._store_path)!r}, array {self._name!r}: sample {sample} fails "
            f"its checksum — recompute the store (delete it and rerun its stage)"
        )

    @property
    def shape(self) -> tuple[int, ...]:
        if self._reader is not None:
            return self._reader.layout.shape
        return tuple(self.zarr_array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        if self._reader is not None:
            return self._reader.layout.dtype
        dtype = self.zarr_array.dtype
        return np.dtype(dtype) if not isinstance(dtype, str) else np.dtype(str)

    @property
    def chunks(self) -> tuple[int, ...]:
        if self._reader is not None:
            return self._reader.layout.chunk_shape
        return tuple(self.zarr_array.chunks)

    @property
    def shards(self) -> tuple[int, ...] | None:
        if self._reader is not None:
            lay = self._reader.layout
            return (lay.shard, *lay.shape[1:])
        shards = self.zarr_array.shards
        return None if shards is None else tuple(shards)

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self.zarr_array.attrs

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection: Any) -> np.ndarray:
        if self._reader is not None:
            rows = _sample_slice(selection, self.shape)
            if rows is not None:
                return self._reader.read(*rows)
        try:
            return np.asarray(self.zarr_array[selection])
        except (ValueError, RuntimeError) as err:
            bad = self._find_bad_chunk(selection)
            if bad is None:
                raise
            raise CorruptStoreError(
                f"store {str(self._store_path)!r}, array {self._name!r}: chunk "
                f"{bad} (samples {bad[0] * self.chunks[0]}..{(bad[0] + 1) * self.chunks[0] - 1}) "
                f"fails its checksum ({err}); the file changed after it was written — "
                f"recompute the store (delete it and rerun its stage, e.g. `dvc repro -f`)"
            ) from err

    def _find_bad_chunk(self, selection: Any) -> tuple[int, ...] | None:
        """Read the chunks touched by ``selection`` one by one and return the first bad one."""
        n = self.shape[0]
        step = self.chunks[0]
        if isinstance(selection, slice):
            start, stop, _ = selection.indices(n)
        elif isinstance(selection, tuple) and selection and isinstance(selection[0], slice):
            start, stop, _ = selection[0].indices(n)
        else:
            start, stop = 0, n
        for c in range(start // step, (max(stop, start + 1) - 1) // step + 1):
            try:
                self.zarr_array[c * step : min((c + 1) * step, n)]
            except (ValueError, RuntimeError):
                return (c,) + (0,) * (len(self.shape) - 1)
        return None


@dataclass(frozen=True)
class Store:
    """A complete store opened for reading.

    Attributes
    ----------
    path : Path
    attrs : dict
        The group attrs: ``format``, ``provenance``, ``identity``, ``fingerprint``, ...
    """

    path: Path
    attrs: dict[str, Any]

    @functools.cached_property
    def group(self) -> zarr.Group:
        """The zarr group (opened on first use; the arrays do not need it)."""
        return zarr.open_group(self.path, mode="r")

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.attrs["provenance"])

    @property
    def fingerprint(self) -> str:
        return str(self.attrs["fingerprint"])

    def __len__(self) -> int:
        return int(self.attrs["num_samples"])

    def array(self, name: str) -> CheckedArray:
        """One array of the store, read-checked (see :class:`CheckedArray`)."""
        if "/" in name or not (self.path / name / "zarr.json").is_file():
            have = ", ".join(sorted(self.group.array_keys()))
            raise StoreError(f"store {str(self.path)!r} has no array {name!r} (it has: {have})")
        return CheckedArray(self.path, name)


def _read_attrs(path: Path) -> dict[str, Any] | None:
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        return dict(json.loads(meta.read_text()).get("attributes", {}))
    except json.JSONDecodeError:
        return None


def _diff(stored: Any, expected: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two provenance mappings (only keys of ``expected``)."""
    out: list[str] = []
    if isinstance(expected, Mapping) and isinstance(stored, Mapping):
        for key, value in expected.items():
            name = f"{prefix}{key}"
            if key not in stored:
                out.append(f"{name}: missing in the store (expected {value!r})")
            else:
                out.extend(_diff(stored[key], value, name + "."))
    elif stored != expected:
        out.append(f"{prefix.rstrip('.')}: store has {stored!r}, expected {expected!r}")
    return out


def _stores_beside(path: Path) -> list[str]:
    """Names of the Zarr folders next to ``path`` (``*.zarr``), for a did-you-mean hint."""
    try:
        return sorted(p.name for p in path.parent.glob("*.zarr") if p.is_dir())
    except OSError:
        return []


def open_store(
    path: str | Path,
    *,
    kind: str | None = None,
    expect: Mapping[str, Any] | None = None,
) -> Store:
    """Open a complete store for reading and check what made it.

    Parameters
    ----------
    path : str or Path
        The store folder.
    kind : str, optional
        Required ``provenance.kind`` (``"images"`` or ``"features"``).
    expect : mapping, optional
        Provenance entries the store must have (nested mappings compared key by key), e.g.
        ``{"producer": "hog", "params": {"cell_size": 8}}``.

    Returns
    -------
    Store

    Raises
    ------
    StoreError
        The path is missing, not a store of this pipeline, or incomplete.
    IncompatibleStoreError
        The store was made by another kind of stage or with other parameters / code / input.
    """
    path = Path(path)
    attrs = _read_attrs(path)
    if attrs is None:
        hint = ""
        partials = (
            sorted(path.parent.glob(f".{path.name}.partial-*")) if path.parent.exists() else []
        )
        if partials:
            hint = (
                f" (an interrupted write is in {str(partials[0])!r}: rerun its stage to finish it)"
            )
        make = {
            "images": f"invert prepare --source sample --out {path}",
            "features": f"invert extract FEATURE --images IMAGE_STORE --out {path}",
        }.get(kind or "", "its stage (dvc repro)")
        near = _stores_beside(path)
        close = difflib.get_close_matches(path.name, list(near), n=1, cutoff=0.6)
        if close:  # a typo in the path, most likely
            hint += f" — did you mean {str(path.parent / close[0])!r}?"
        raise StoreError(f"no store at {str(path)!r}{hint}; or create it: {make}")
    if attrs.get("format") != STORE_FORMAT:
        raise StoreError(
            f"{str(path)!r} is not a store of this pipeline (format {attrs.get('format')!r}, "
            f"expected {STORE_FORMAT!r})"
        )
    if not attrs.get("complete"):
        raise StoreError(f"store {str(path)!r} is incomplete; rerun the stage that makes it")
    prov = attrs["provenance"]
    if kind is not None and prov.get("kind") != kind:
        raise IncompatibleStoreError(
            f"{str(path)!r} is a {prov.get('kind')!r} store made by {prov.get('stage')!r}; "
            f"this needs {'an' if kind[:1] in 'aeiou' else 'a'} {kind!r} store — check the "
            "path you passed"
        )
    if expect:
        problems = _diff(prov, expect)
        if problems:
            raise IncompatibleStoreError(
                f"store {str(path)!r} was made differently from what is asked:\n  "
                + "\n  ".join(problems)
                + "\nrecompute it with the current parameters (`dvc repro`, or rerun the stage "
                "that makes it: prepare and extract take --overwrite) or point to a store made "
                "with these parameters"
            )
    return Store(path=path, attrs=attrs)


def write_shard(
    scratch: str | Path, index: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write whole shard ``index`` of each array, then mark the shard finished.

    Runs inside a worker (thread, process or a ``dask.distributed`` worker on another host
    sharing the filesystem); takes only plain arguments so that it pickles.

    Parameters
    ----------
    scratch : str or Path
        The scratch folder of a :class:`StoreWriter`.
    index : int
        Shard number along the sample axis.
    arrays : mapping of str to ndarray
        ``name -> (n, ...)`` data of this shard; ``n`` is the shard size except for the
        last shard.
    meta : mapping
        JSON-serialisable per-shard record (failures, content hash); kept in the marker and
        gathered by :meth:`StoreWriter.finalize`.
    """
    scratch = Path(scratch)
    try:
        for name, data in arrays.items():
            layout = ShardLayout.load(scratch / name)
            if layout is not None:  # the stores' own layout: encode and write directly
                write_shard_file(layout, index, np.asarray(data), tmp_dir=scratch / _SHARDS_DIR)
                continue
            array = zarr.open_array(scratch / name, mode="r+")
            shard = array.shards[0] if array.shards else array.chunks[0]
            start = index * shard
            stop = min(start + shard, array.shape[0])
            if data.shape[0] != stop - start:
                raise StoreError(
                    f"shard {index} of {name!r} needs {stop - start} samples, got {data.shape[0]}"
                )
            array[start:stop] = data
        markers = scratch / _SHARDS_DIR
        tmp = markers / f".{index}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(_canonical(dict(meta)))
        os.replace(tmp, markers / f"{index}.json")  # atomic: a marker is whole or absent
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise StoreError(
            f"cannot write shard {index} into {str(scratch)!r}: {err.strerror} — the disk or "
            "quota is full (or a file-size limit is set); free space and rerun: the shards "
            "already finished are kept"
        ) from err


class StoreWriter:
    """Write a store resumably: scratch folder, whole-shard tasks, rename into place.

    Use as a context manager; it holds an exclusive lock on the output for its lifetime.

    Parameters
    ----------
    out : str or Path
        Final store path.
    provenance : mapping
        What makes the store (kind, stage, producer, params, code version, input
        fingerprint). Its hash, with the array layout, names the scratch folder, so a resumed
        run only ever continues a run with identical inputs.
    arrays : sequence of ArraySpec
        The arrays; sharded ones (``shard`` set) must share the sample count and shard size.
    overwrite : bool
        Replace an existing store made differently. Without it such a store is refused
        before any work. The old store stays in place until the new one is complete.
    wait : bool
        When another process holds the lock: wait for it (true) or raise
        :class:`StoreBusyError` (false).

    Attributes
    ----------
    up_to_date : bool
        The output already exists, complete, with the same identity: nothing to do.
    scratch : Path
        The scratch folder tasks write into.
    """

    def __init__(
        self,
        out: str | Path,
        provenance: Mapping[str, Any],
        arrays: Sequence[ArraySpec],
        *,
        overwrite: bool = False,
        wait: bool = True,
    ) -> None:
        self.out = Path(out).absolute()
        self.arrays = list(arrays)
        sharded = [a for a in self.arrays if a.shard is not None]
        if not sharded:
            raise StoreError("a store needs at least one sharded array")
        n, shard = sharded[0].shape[0], sharded[0].shard
        assert shard is not None
        for a in sharded:
            if a.shape[0] != n or a.shard != shard:
                raise StoreError("sharded arrays of one store must share sample count and shard")
        self.num_samples = n
        self.shard_size = shard
        self.num_shards = max(1, -(-n // shard))
        self.provenance = {**dict(provenance), "store_format": STORE_FORMAT}
        layout = [
            {
                "name": a.name,
                "shape": list(a.shape),
                "dtype": a.dtype,
                "chunk": a.chunk,
                "shard": a.shard,
                "dims": list(a.dims),
                "codec": a.codec,
            }
            for a in self.arrays
        ]
        self.identity = identity_of({"provenance": self.provenance, "layout": layout})
        self.scratch = self.out.parent / f".{self.out.name}.partial-{self.identity[:16]}"
        self.overwrite = overwrite
        self.wait = wait
        self.up_to_date = False
        self._lock_file: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> StoreWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._prepare()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._unlock()

    def _lock(self) -> None:
        lock_path = self.out.parent / f".{self.out.name}.lock"
        self._lock_file = lock_path.open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            if not self.wait:
                self._lock_file.close()
                raise StoreBusyError(
                    f"{str(self.out)!r} is being written by {holder}; wait for it to finish "
                    f"(or run without --no-wait to queue behind it)"
                ) from None
            log.warning("waiting for %s, which is writing %s", holder, self.out)
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        self._lock_file.flush()

    def _unlock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.seek(0)
                self._lock_file.truncate()
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _prepare(self) -> None:
        existing = _read_attrs(self.out)
        if existing is not None:
            if existing.get("identity") == self.identity and existing.get("complete"):
                self.up_to_date = True
                return
            if not self.overwrite:
                what = "made with other parameters, code or input"
                problems = ""
                if "provenance" in existing:
                    diffs = _diff(existing["provenance"], self.provenance)
                    problems = ("\n  " + "\n  ".join(diffs)) if diffs else ""
                    what = "made differently" if diffs else "laid out differently"
                raise IncompatibleStoreError(
                    f"{str(self.out)!r} already exists and was {what}:{problems}\n"
                    "pass --overwrite to replace it (the old store is kept until the new one "
                    "is complete) or choose another --out"
                )
        elif self.out.exists() and any(self.out.iterdir()):
            raise StoreError(
                f"{str(self.out)!r} exists and is not a store of this pipeline; "
                "move it away or choose another --out"
            )
        for stale in self.out.parent.glob(f".{self.out.name}.partial-*"):
            if stale != self.scratch:
                log.warning(
                    "an interrupted write with other parameters is left in %s; delete it to "
                    "free its space",
                    stale,
                )
        if (self.scratch / "zarr.json").is_file():
            log.info(
                "resuming %s: %d of %d shards done",
                self.out,
                len(self.done_shards()),
                self.num_shards,
            )
            return
        if self.scratch.exists():
            shutil.rmtree(self.scratch)  # created but killed before the layout was written
        tmp = self.scratch.with_name(self.scratch.name + ".init")
        if tmp.exists():
            shutil.rmtree(tmp)
        group = zarr.open_group(tmp, mode="w")
        for spec in self.arrays:
            spec.create(group)
        (tmp / _SHARDS_DIR).mkdir()
        os.replace(tmp, self.scratch)  # the layout appears whole or not at all

    # -- progress --------------------------------------------------------------------------
    def done_shards(self) -> set[int]:
        """Shard numbers whose marker exists (finished by this or an earlier run)."""
        markers = self.scratch / _SHARDS_DIR
        if not markers.is_dir():
            return set()
        return {int(p.stem) for p in markers.glob("*.json")}

    def pending_shards(self) -> list[int]:
        """Shard numbers still to write, in order."""
        if self.up_to_date:
            return []
        done = self.done_shards()
        return [i for i in range(self.num_shards) if i not in done]

    def shard_bounds(self, index: int) -> tuple[int, int]:
        """Sample range ``[start, stop)`` of shard ``index``."""
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.num_samples)

    def shard_meta(self) -> list[dict[str, Any]]:
        """The per-shard records of all finished shards, in shard order."""
        markers = self.scratch / _SHARDS_DIR
        return [json.loads((markers / f"{i}.json").read_text()) for i in range(self.num_shards)]

    def redo_shards(self, indices: Sequence[int]) -> None:
        """Forget that shards ``indices`` are finished: the next run writes them again.

        Their data files stay until overwritten; the other shards are kept.
        """
        markers = self.scratch / _SHARDS_DIR
        for i in indices:
            (markers / f"{i}.json").unlink(missing_ok=True)

    def write_small(self, name: str, data: np.ndarray) -> None:
        """Write an unsharded array (ids, labels) whole, from the coordinating process."""
        array = zarr.open_array(self.scratch / name, mode="r+")
        array[...] = data

    def copy_small(self, name: str, source: Store) -> None:
        """Array ``name`` of ``source`` (e.g. the input's ids), copied file by file.

        Falls back to reading and writing it when the two arrays are laid out differently.
        """
        src, dst = source.path / name, self.scratch / name
        same = (src / "zarr.json").is_file() and json.loads(
            (src / "zarr.json").read_text()
        ) == json.loads((dst / "zarr.json").read_text())
        if not same:
            self.write_small(name, source.array(name)[:])
            return
        tmp = self.scratch / _SHARDS_DIR / f".copy-{name}-{uuid.uuid4().hex}"
        shutil.copytree(src, tmp)
        shutil.rmtree(dst)
        os.replace(tmp, dst)

    # -- completion ------------------------------------------------------------------------
    def finalize(self, *, fingerprint: str, attrs: Mapping[str, Any] | None = None) -> Path:
        """Check every shard is done, write the attrs and rename the store into place.

        Parameters
        ----------
        fingerprint : str
            The store's content fingerprint (stores downstream record it as their input).
        attrs : mapping, optional
            Further attrs (failures, skipped files, summary figures).

        Returns
        -------
        Path
            The final store path.
        """
        if self.up_to_date:
            return self.out
        missing = self.pending_shards()
        if missing:
            raise StoreError(
                f"cannot finish {str(self.out)!r}: shards {missing[:10]} are not written; rerun"
            )
        group = zarr.open_group(self.scratch, mode="r+")
        group.attrs.update(
            {
                **dict(attrs or {}),
                "format": STORE_FORMAT,
                "provenance": self.provenance,
                "identity": self.identity,
                "fingerprint": fingerprint,
                "num_samples": self.num_samples,
                "shard_size": self.shard_size,
                "complete": True,
            }
        )
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.out, old)
        os.replace(self.scratch, self.out)
        shutil.rmtree(self.out / _SHARDS_DIR)  # after the rename: a kill before it can resume
        if old is not None:
            shutil.rmtree(old)
        return self.out


def content_digest(*arrays: np.ndarray) -> str:
    """A cheap digest of a shard's arrays (crc32c of each; ~25 GB/s, no copy).

    Shard digests only tell whether two runs wrote the same numbers; the store's fingerprint
    combines them with its identity in a sha256 (:func:`combine_hashes`).
    """
    parts = []
    for a in arrays:
        crc = crc32c_of(a)  # the array's own buffer when C-contiguous: no copy
        parts.append(f"{a.dtype.str}{a.shape}:{crc:08x}")
    return ";".join(parts)


def combine_hashes(parts: Iterator[str] | Sequence[str]) -> str:
    """One sha256 over an ordered sequence of hex digests (per-shard content hashes)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
    return h.hexdigest()
