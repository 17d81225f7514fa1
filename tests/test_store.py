"""The store layer: sharded checksummed arrays, provenance checks, resumable writes, locking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import CorruptStoreError, IncompatibleStoreError, StoreBusyError, StoreError
from pipeline.store import ArraySpec, StoreWriter, open_store, write_shard
from tests.conftest import flip_byte

N, SHARD, CHUNK = 40, 16, 4


def _arrays() -> list[ArraySpec]:
    return [
        ArraySpec("x", (N, 3, 5, 5), "float32", CHUNK, SHARD, ("sample", "c", "y", "x")),
        ArraySpec("ids", (N,), "str", N, None, ("sample",)),
    ]


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, 3, 5, 5)).astype(np.float32)


def _write(
    out: Path, params: dict[str, int], *, shards: list[int] | None = None, overwrite: bool = False
) -> StoreWriter:
    data = _data()
    prov = {"kind": "features", "stage": "test", "producer": "toy", "params": params}
    with StoreWriter(out, prov, _arrays(), overwrite=overwrite) as w:
        for i in w.pending_shards() if shards is None else shards:
            start, stop = w.shard_bounds(i)
            write_shard(w.scratch, i, {"x": data[start:stop]}, {"hash": str(i)})
        if shards is None and not w.up_to_date:
            w.write_small("ids", np.array([f"s{i}" for i in range(N)], dtype=object))
            w.finalize(fingerprint="f" * 64)
    return w


def test_round_trip_layout_and_attrs(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _write(out, {"a": 1})
    store = open_store(out, kind="features", expect={"producer": "toy", "params": {"a": 1}})
    np.testing.assert_array_equal(store.array("x")[:], _data())
    assert list(store.array("ids")[:3]) == ["s0", "s1", "s2"]
    # plain zarr reads it, and the layout is sharded + checksummed
    arr = zarr.open_array(out / "x", mode="r")
    assert arr.shards == (SHARD, 3, 5, 5) and arr.chunks == (CHUNK, 3, 5, 5)
    codecs = [type(c).__name__ for c in arr.compressors]
    assert codecs == ["BloscCodec", "Crc32cCodec"]
    assert len(list((out / "x" / "c").iterdir())) == 3  # ceil(40 / 16) shard files
    assert store.attrs["complete"] and store.attrs["provenance"]["store_format"]
    assert "created" not in store.attrs  # nothing of when or where it was made
    assert not (out / "_shards").exists()


def test_flipped_byte_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _write(out, {"a": 1})
    flip_byte(out / "x" / "c" / "1" / "0" / "0" / "0", 0.3)  # shard 1 = samples 16..31
    x = open_store(out).array("x")
    np.testing.assert_array_equal(x[:16], _data()[:16])  # other shards still read
    with pytest.raises(CorruptStoreError, match=r"array 'x': chunk \(\d+, 0, 0, 0\).*checksum"):
        x[16:32]


def test_incompatible_expectation_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _write(out, {"a": 1})
    with pytest.raises(IncompatibleStoreError, match=r"params.a: store has 1, expected 2"):
        open_store(out, expect={"params": {"a": 2}})
    with pytest.raises(IncompatibleStoreError, match="needs an 'images' store"):
        open_store(out, kind="images")


def test_existing_store_made_differently_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _write(out, {"a": 1})
    with pytest.raises(IncompatibleStoreError, match="--overwrite"):
        _write(out, {"a": 2})
    assert open_store(out).provenance["params"] == {"a": 1}  # untouched
    _write(out, {"a": 2}, overwrite=True)
    assert open_store(out).provenance["params"] == {"a": 2}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.zarr.old")] == []


def test_same_inputs_are_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    _write(out, {"a": 1})
    assert _write(out, {"a": 1}).up_to_date


def test_interrupted_write_is_invisible_then_resumes(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    w = _write(out, {"a": 1}, shards=[0, 2])  # "killed" after two of three shards
    assert not out.exists()
    with pytest.raises(StoreError, match="interrupted write"):
        open_store(out)
    with StoreWriter(
        out, {"kind": "features", "stage": "test", "producer": "toy", "params": {"a": 1}}, _arrays()
    ) as again:
        assert again.scratch == w.scratch
        assert again.pending_shards() == [1]
    _write(out, {"a": 1})
    np.testing.assert_array_equal(open_store(out).array("x")[:], _data())


def test_second_writer_fails_or_waits(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    prov = {"kind": "features", "stage": "test", "producer": "toy", "params": {}}
    with (
        StoreWriter(out, prov, _arrays()),
        pytest.raises(StoreBusyError, match="is being written by pid"),
    ):
        StoreWriter(out, prov, _arrays(), wait=False).__enter__()


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="no store at"):
        open_store(tmp_path / "junk")
    prov = {"kind": "features", "stage": "test", "producer": "toy", "params": {}}
    with pytest.raises(StoreError, match="not a store of this pipeline"):
        StoreWriter(tmp_path / "junk", prov, _arrays()).__enter__()


def test_shard_must_be_multiple_of_chunk() -> None:
    with pytest.raises(StoreError, match="multiple of the chunk"):
        ArraySpec("x", (10, 2), "float32", 3, 8, ("sample", "c"))
