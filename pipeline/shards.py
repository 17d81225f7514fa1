"""Whole-shard writes and chunk reads of the stores' sharded arrays, without zarr's front end.

Every per-sample array of a store (see :mod:`pipeline.store`) is a Zarr v3 array with the
``sharding_indexed`` codec: one file per shard of ``shard`` samples, holding
``shard / chunk`` inner chunks (each the inner codec chain's output: the chunk's
little-endian bytes, optionally Blosc-compressed, then a 4-byte **crc32c**), followed by the
shard index (``(offset, nbytes)`` uint64 pairs per chunk, ``2**64 - 1`` for an empty one)
and the index's own crc32c. That layout is fixed by the Zarr sharding specification
(ZEP 2), and plain ``zarr`` reads what this module writes (tests check both directions).

The stages always write whole shards and read whole chunks, which is the simplest case of
that format. zarr-python's general machinery (async event loop, per-chunk buffer objects,
partial-shard bookkeeping) costs more than the codecs here — a shard of 64 HOG maps took
~16 ms to write and a 2 MB chunk ~1.7 ms to read, 10× a page-cache copy — so:

- :func:`write_shard_file` encodes each chunk with numcodecs' Blosc (the library zarr
  itself calls, the GIL released) or not at all (``raw``), appends the crc32c
  (``crc32c_rs``: the same checksum at twice google_crc32c's speed here), and writes the
  file in one go through a temporary file and an atomic rename;
- :class:`ShardReader` maps shard files read-only, verifies the index's and each chunk's
  crc32c, and hands out a raw chunk as a zero-copy view of the mapping (a compressed chunk
  is decoded straight into the caller's buffer); :meth:`ShardReader.sample_rows` hands
  out samples of one-sample raw chunks unverified, with the crc32c their copy must have.

Anything else (unsharded arrays, strings, another codec chain) is left to zarr:
:meth:`ShardLayout.load` returns ``None`` for it.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c_rs
import numpy as np
from numcodecs import Blosc

from pipeline.errors import CorruptStoreError, StoreError

__all__ = ["ShardLayout", "ShardReader", "copy_checked", "crc32c_of", "write_shard_file"]

_EMPTY = np.uint64(2**64 - 1)  # index entry of a chunk that is not stored (fill value)
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_CRC = 4  # bytes of a crc32c


#: crc32c of bytes or of a C-contiguous array's bytes (no copy; the GIL released).
#: ``crc32c_rs`` picks a vectorised (VPCLMULQDQ / PCLMULQDQ) kernel for the CPU at run time:
#: 26 GB/s from memory and 61-69 GB/s from cache on this machine's one core, against 14 and
#: 27 GB/s for ``google_crc32c`` (``benchmarks/run_all.py --only loader``).
_crc: Callable[[Any], int] = crc32c_rs.crc32c  # any buffer-protocol object


def crc32c_of(a: np.ndarray) -> int:
    """crc32c of an array's bytes in C order (no copy when it is C-contiguous)."""
    return int(_crc(a if a.flags.c_contiguous else np.ascontiguousarray(a)))


def copy_checked(dst: np.ndarray, src: np.ndarray, crc: int | None) -> bool:
    """Copy ``src`` into the C-contiguous ``dst``; whether the copy's crc32c is ``crc``.

    The check runs on the copy just made, while it is in cache: a sample is verified without
    a second pass over memory (how the loader and :meth:`ShardReader.read` use the
    unverified views of :meth:`ShardReader.sample_rows`). ``crc=None``: nothing to check.
    """
    dst[...] = src
    return crc is None or _crc(dst) == crc


@dataclass(frozen=True)
class ShardLayout:
    """The layout of one sharded store array, read from its ``zarr.json``.

    Attributes
    ----------
    path : Path
        The array's folder.
    shape : tuple of int
        Array shape; axis 0 is the sample axis (the only one that is split).
    dtype : numpy.dtype
        Little-endian element type.
    chunk : int
        Samples per inner chunk.
    shard : int
        Samples per shard file (a multiple of ``chunk``).
    blosc : dict or None
        Blosc parameters of the inner chunks (``cname``, ``clevel``, ``shuffle``,
        ``blocksize``, ``typesize``), ``None`` for uncompressed chunks.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunk: int
    shard: int
    blosc: dict[str, Any] | None

    @classmethod
    def load(cls, path: str | Path) -> ShardLayout | None:
        """The layout of the array at ``path``, or ``None`` if it is not one this module handles.

        Handled: a numeric array, regular chunk grid split along axis 0 only, default chunk
        keys with ``/``, fill value 0, ``sharding_indexed`` with inner codecs ``bytes``
        (little) [+ ``blosc``] + ``crc32c`` and index codecs ``bytes`` + ``crc32c`` at the end.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "zarr.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        try:
            shape = tuple(int(s) for s in meta["shape"])
            dtype = np.dtype(meta["data_type"]).newbyteorder("<")
            outer = [int(s) for s in meta["chunk_grid"]["configuration"]["chunk_shape"]]
            keys = meta["chunk_key_encoding"]
            codecs = meta["codecs"]
        except (KeyError, TypeError, ValueError):
            return None
        if (
            meta.get("zarr_format") != 3
            or meta.get("node_type") != "array"
            or dtype.kind not in "biuf"
            or meta["chunk_grid"].get("name") != "regular"
            or keys.get("name") != "default"
            or keys.get("configuration", {}).get("separator", "/") != "/"
            or meta.get("fill_value") not in (0, 0.0, False)
            or len(codecs) != 1
            or codecs[0].get("name") != "sharding_indexed"
            or not shape
            or list(outer[1:]) != list(shape[1:])
        ):
            return None
        conf = codecs[0]["configuration"]
        inner = [int(s) for s in conf["chunk_shape"]]
        if inner[1:] != outer[1:] or outer[0] % inner[0] or conf.get("index_location") != "end":
            return None
        if [c.get("name") for c in conf.get("index_codecs", [])] != ["bytes", "crc32c"]:
            return None
        chain = conf.get("codecs", [])
        names = [c.get("name") for c in chain]
        endian = (chain[0].get("configuration") or {}).get("endian", "little") if chain else None
        if dtype.itemsize > 1 and endian != "little":
            return None
        blosc: dict[str, Any] | None = None
        if names == ["bytes", "blosc", "crc32c"]:
            c = chain[1]["configuration"]
            blosc = {
                "cname": c["cname"],
                "clevel": int(c["clevel"]),
                "shuffle": _SHUFFLE[c["shuffle"]],
                "blocksize": int(c.get("blocksize", 0)),
                "typesize": int(c.get("typesize", dtype.itemsize)),
            }
        elif names != ["bytes", "crc32c"]:
            return None
        return cls(path, shape, dtype, inner[0], outer[0], blosc)

    @property
    def chunks_per_shard(self) -> int:
        return self.shard // self.chunk

    @property
    def num_shards(self) -> int:
        return -(-self.shape[0] // self.shard)

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return (self.chunk, *self.shape[1:])

    def shard_file(self, index: int) -> Path:
        """The file of shard ``index`` (``c/<index>/0/...``, zarr's default chunk key)."""
        return self.path.joinpath("c", str(index), *["0"] * (len(self.shape) - 1))

    def codec(self) -> Blosc | None:
        """A numcodecs Blosc codec for the inner chunks (``None``: raw)."""
        return None if self.blosc is None else Blosc(**self.blosc)


def _write_all(fd: int, pieces: list[Any]) -> None:
    """Write buffers back to back with as few system calls as possible (``writev``).

    A shard of one-sample chunks is 2 pieces a sample; writing them one call each cost a
    third of the write time of a small-feature shard here.
    """
    views = [memoryview(p).cast("B") for p in pieces]
    i = 0
    while i < len(views):
        batch = views[i : i + 1024]  # IOV_MAX
        written = os.writev(fd, batch)
        for v in batch:  # skip what was written; a short write resumes mid-buffer
            if written < len(v):
                views[i] = v[written:]
                break
            written -= len(v)
            i += 1


def write_shard_file(
    layout: ShardLayout, index: int, data: np.ndarray, *, tmp_dir: str | Path | None = None
) -> None:
    """Encode and write whole shard ``index`` of an array, atomically.

    Parameters
    ----------
    layout : ShardLayout
    index : int
        Shard number along the sample axis.
    data : (n, ...) ndarray
        The shard's samples: ``n`` is ``layout.shard`` except for the last shard, which
        holds the rest of the array.
    tmp_dir : str or Path, optional
        Where the file is assembled before being renamed into place (same filesystem);
        default: beside the shard file.

    Raises
    ------
    StoreError
        ``data`` has the wrong sample count or per-sample shape.
    """
    start = index * layout.shard
    n = min(layout.shard, layout.shape[0] - start)
    if index < 0 or n <= 0:
        raise StoreError(f"{layout.path}: no shard {index} (the array has {layout.num_shards})")
    if data.shape != (n, *layout.shape[1:]):
        raise StoreError(
            f"shard {index} of {str(layout.path)!r} needs shape {(n, *layout.shape[1:])}, "
            f"got {data.shape}"
        )
    data = np.ascontiguousarray(data, dtype=layout.dtype)
    codec = layout.codec()
    chunks = -(-n // layout.chunk)  # chunks past the end of the array are not stored
    if n % layout.chunk:  # the array's last chunk: padded with the fill value
        padded = np.zeros((chunks * layout.chunk, *layout.shape[1:]), layout.dtype)
        padded[:n] = data
        data = padded
    blocks = data.reshape(chunks, -1)  # one row per chunk
    encoded: list[Any] = (
        [b.view(np.uint8) for b in blocks]  # raw: the chunk's own bytes, no copy
        if codec is None
        else [codec.encode(b.reshape(layout.chunk_shape)) for b in blocks]
    )
    crcs = [_crc(e).to_bytes(_CRC, "little") for e in encoded]
    sizes = np.array([len(e) + _CRC for e in encoded], dtype="<u8")
    index_table = np.full((layout.chunks_per_shard, 2), _EMPTY, dtype="<u8")
    index_table[:chunks, 1] = sizes
    index_table[:chunks, 0] = np.cumsum(sizes) - sizes
    pieces: list[Any] = [piece for pair in zip(encoded, crcs) for piece in pair]
    table = index_table.tobytes()
    pieces += [table, _crc(table).to_bytes(_CRC, "little")]
    final = layout.shard_file(index)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp_dir or final.parent) / f".shard-{index}-{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb", buffering=0) as f:
            _write_all(f.fileno(), pieces)
        os.replace(tmp, final)  # a shard file is whole or absent
    finally:
        if tmp.exists():
            tmp.unlink()


class ShardReader:
    """Read chunks of one sharded array through read-only mappings of its shard files.

    Parameters
    ----------
    layout : ShardLayout
    where : str
        How errors name the array (e.g. ``"store 'cache/hog.zarr', array 'features'"``).
    cache : int
        Shard files kept mapped (least recently used dropped first).

    Notes
    -----
    Thread-safe. Views returned by :meth:`chunk` stay valid after their shard leaves the
    cache (the mapping lives as long as a view of it). Store files are never modified in
    place (a rewrite replaces the file), so a mapping never changes under a reader.
    """

    def __init__(self, layout: ShardLayout, where: str, cache: int = 8) -> None:
        self.layout = layout
        self.where = where
        self._cache: OrderedDict[int, tuple[mmap.mmap, np.ndarray] | None] = OrderedDict()
        self._size = cache
        self._lock = threading.Lock()
        self._spaced: dict[int, bool] = {}  # shard -> samples evenly spaced (sample_rows)
        dims = layout.shape[1:]  # strides inside a sample, C order
        self._inner = [
            int(np.prod(dims[i + 1 :])) * layout.dtype.itemsize for i in range(len(dims))
        ]
        # bytes from one sample to the next in a shard of one raw chunk per sample
        self._spacing = int(np.prod(dims, dtype=np.int64)) * layout.dtype.itemsize + _CRC

    # -- errors ----------------------------------------------------------------------------
    def _corrupt(self, chunk: int, why: str) -> CorruptStoreError:
        lo = chunk * self.layout.chunk
        hi = min(lo + self.layout.chunk, self.layout.shape[0]) - 1
        coords = (chunk,) + (0,) * (len(self.layout.shape) - 1)
        return CorruptStoreError(
            f"{self.where}: chunk {coords} (samples {lo}..{hi}) {why}; the file changed after "
            f"it was written — recompute the store (delete it and rerun its stage, e.g. "
            f"`dvc repro -f`)"
        )

    # -- shard files -----------------------------------------------------------------------
    def _open(self, shard: int) -> tuple[mmap.mmap, np.ndarray] | None:
        path = self.layout.shard_file(shard)
        try:
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return None  # never written: every chunk is the fill value
        except ValueError as err:  # an empty file cannot be mapped
            first = shard * self.layout.chunks_per_shard
            raise self._corrupt(first, "has an empty shard file") from err
        cps = self.layout.chunks_per_shard
        size = cps * 16 + _CRC
        first = shard * cps
        if len(mm) < size:
            raise self._corrupt(first, f"has a truncated shard file {str(path)!r}")
        raw = mm[len(mm) - size : len(mm) - _CRC]  # a small copy
        stored = int.from_bytes(mm[len(mm) - _CRC :], "little")
        if _crc(raw) != stored:
            raise self._corrupt(first, f"has a shard index that fails its checksum ({path})")
        table = np.frombuffer(raw, dtype="<u8").reshape(cps, 2).copy()
        stored_chunks = table[:, 0] != _EMPTY
        if np.any(table[stored_chunks].sum(axis=1) > len(mm) - size):
            bad = int(np.flatnonzero(stored_chunks & (table.sum(axis=1) > len(mm) - size))[0])
            raise self._corrupt(first + bad, f"points past the end of {str(path)!r} (truncated)")
        return mm, table

    def _shard(self, shard: int) -> tuple[mmap.mmap, np.ndarray] | None:
        with self._lock:
            if shard in self._cache:
                self._cache.move_to_end(shard)
                return self._cache[shard]
        entry = self._open(shard)
        with self._lock:
            self._spaced.pop(shard, None)  # a new mapping: look at its index again
            self._cache[shard] = entry
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return entry

    # -- chunks ----------------------------------------------------------------------------
    def chunk(self, c: int, out: np.ndarray | None = None) -> np.ndarray | None:
        """Inner chunk ``c`` (``(chunk, ...)``, padded past the array's end), checksum-verified.

        Parameters
        ----------
        c : int
            Chunk number along the sample axis.
        out : ndarray, optional
            A C-contiguous ``(chunk, ...)`` buffer to decode into.

        Returns
        -------
        ndarray or None
            ``out`` when given; otherwise a read-only view of the mapped file (raw chunks) or
            a new array (compressed ones). ``None`` when the chunk is not stored (it holds
            the fill value, 0) and no ``out`` was given.

        Raises
        ------
        CorruptStoreError
            The chunk's or its shard index's checksum does not match, or the file is
            truncated.
        """
        lay = self.layout
        shard, j = divmod(c, lay.chunks_per_shard)
        entry = self._shard(shard)
        if entry is None or entry[1][j, 0] == _EMPTY:
            if out is None:
                return None
            out[...] = 0
            return out
        mm, table = entry
        off, nbytes = int(table[j, 0]), int(table[j, 1])
        body = np.frombuffer(mm, np.uint8, nbytes - _CRC, off)  # read-only view, no copy
        stored = int.from_bytes(mm[off + nbytes - _CRC : off + nbytes], "little")
        if _crc(body) != stored:
            raise self._corrupt(c, "fails its checksum")
        if lay.blosc is None:
            expected = int(np.prod(lay.chunk_shape)) * lay.dtype.itemsize
            if len(body) != expected:
                raise self._corrupt(c, f"has {len(body)} bytes, expected {expected}")
            view = np.frombuffer(body, dtype=lay.dtype).reshape(lay.chunk_shape)
            if out is None:
                return view
            out[...] = view
            return out
        target = out if out is not None else np.empty(lay.chunk_shape, lay.dtype)
        try:
            Blosc(**lay.blosc).decode(body, out=target)
        except Exception as err:  # a checksummed chunk that does not decode: corrupt
            raise self._corrupt(c, f"does not decode ({err})") from err
        return target

    def sample_rows(self, start: int, stop: int) -> tuple[np.ndarray, list[int] | None]:
        """Samples ``start:stop``, and the crc32c each sample's copy must have.

        With one sample per uncompressed chunk (what the stages write) and the range inside
        one shard, the samples are a read-only view of the mapped shard file **not yet
        verified**, and their stored crc32c come with them: the caller copies a sample and
        checks the copy (:func:`copy_checked`) while it is still in cache, instead of a
        separate checksum pass over memory before the copy (1.2x faster for the training
        loader here). Anything else (compressed or multi-sample chunks, chunks never
        written, ranges across shards) is read and verified here, with ``None``.

        Parameters
        ----------
        start, stop : int
            Sample range (clipped to the array).

        Returns
        -------
        rows : (n, ...) ndarray
            The samples (read-only).
        crcs : list of int or None
            crc32c of each sample's bytes, to check on its copy; ``None``: verified.

        Raises
        ------
        CorruptStoreError
            A shard index that fails its checksum, a truncated file, a chunk of the wrong
            size, or (for samples verified here) a chunk that fails its checksum.
        """
        lay = self.layout
        start, stop = max(0, start), min(stop, lay.shape[0])
        if start < stop and (stop - 1) // lay.shard == start // lay.shard:
            spaced = self._spaced_rows(start, stop)
            if spaced is not None:
                return spaced
        return self.read(start, stop), None

    def _spaced_rows(self, start: int, stop: int) -> tuple[np.ndarray, list[int]] | None:
        """Samples ``start:stop`` of one shard as a strided view, with their stored crc32c.

        ``None`` unless the shard holds one raw chunk per sample, back to back.
        """
        lay = self.layout
        shard = start // lay.shard
        if lay.chunk != 1 or lay.blosc is not None:
            return None
        entry = self._shard(shard)
        if entry is None or not self._evenly_spaced(shard, entry[1]):
            return None
        mm = entry[0]
        first, size = (start - shard * lay.shard) * self._spacing, self._spacing
        shape = (stop - start, *lay.shape[1:])
        rows = np.ndarray(shape, lay.dtype, mm, first, (size, *self._inner))
        crcs = np.ndarray((stop - start,), "<u4", mm, first + size - _CRC, (size,))
        return rows, crcs.tolist()

    def _evenly_spaced(self, shard: int, table: np.ndarray) -> bool:
        """Whether shard ``shard`` holds every sample, one raw chunk each, back to back.

        That is what :func:`write_shard_file` writes: the samples (and their crcs) are then
        one strided view of the file. Worked out once per shard.
        """
        known = self._spaced.get(shard)
        if known is None:
            n = min(self.layout.shard, self.layout.shape[0] - shard * self.layout.shard)
            size = self._spacing
            offs, sizes = table[:n, 0], table[:n, 1]
            known = bool(np.all(sizes == size) and np.all(offs == size * np.arange(n)))
            self._spaced[shard] = known
        return known

    def corrupt_sample(self, sample: int) -> CorruptStoreError:
        """The error for a copy of ``sample`` that does not match its stored crc32c."""
        return self._corrupt(sample // self.layout.chunk, "fails its checksum")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` as a new array (chunks decoded in place where they fit)."""
        lay = self.layout
        n = lay.shape[0]
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        out = np.empty((max(stop - start, 0), *lay.shape[1:]), lay.dtype)
        if stop <= start:
            return out
        s = start
        while s < stop:  # one raw chunk per sample: copy each and check the copy (in cache)
            end = min(stop, (s // lay.shard + 1) * lay.shard)
            spaced = self._spaced_rows(s, end)
            if spaced is None:
                break
            rows, crcs = spaced
            for k, crc in enumerate(crcs):
                i = s - start + k
                if not copy_checked(out[i : i + 1], rows[k : k + 1], crc):
                    raise self._corrupt(s + k, "fails its checksum")
            s = end
        for c in range(s // lay.chunk, (stop - 1) // lay.chunk + 1):  # the rest, chunk-wise
            lo, hi = c * lay.chunk, (c + 1) * lay.chunk
            a, b = max(lo, start), min(hi, stop)
            if a == lo and b == hi and lay.blosc is not None:
                self.chunk(c, out=out[a - start : b - start])  # decode straight into place
                continue
            part = self.chunk(c)
            if part is None:
                out[a - start : b - start] = 0
            else:
                out[a - start : b - start] = part[a - lo : b - lo]
        return out
