"""Direct shard I/O against zarr itself: same bytes-level format, same arrays, same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import CorruptStoreError
from pipeline.shards import ShardLayout, ShardReader, write_shard_file
from pipeline.store import ArraySpec, CheckedArray
from tests.conftest import flip_byte

CODECS = ["raw", "lz4", "lz4-shuffle", "zstd", "zstd-fast"]


def _data(dtype: str, n: int = 150) -> np.ndarray:
    """Real-looking values: a smooth ramp with ReLU zeros (compressible, not constant)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 3, 5, 4)).cumsum(axis=0)
    x = np.maximum(x, 0) * 20
    return x.astype(dtype)


def _array(root: Path, data: np.ndarray, codec: str) -> Path:
    """An empty store array with the stores' layout: chunks of 16, shards of 64."""
    group = zarr.open_group(root, mode="w")
    spec = ArraySpec("a", data.shape, str(data.dtype), 16, 64, ("s", "c", "h", "w"), codec=codec)  # type: ignore[arg-type]
    spec.create(group)
    return root / "a"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_our_shards_read_by_zarr_and_zarrs_by_us(tmp_path: Path, codec: str, dtype: str) -> None:
    data = _data(dtype)  # 150 samples: the last shard is partial, its last chunk padded
    ours = _array(tmp_path / "ours.zarr", data, codec)
    layout = ShardLayout.load(ours)
    assert layout is not None and layout.num_shards == 3 and layout.chunks_per_shard == 4
    for i in range(layout.num_shards):
        write_shard_file(layout, i, data[i * 64 : (i + 1) * 64])
    np.testing.assert_array_equal(zarr.open_array(ours, mode="r")[:], data)

    theirs = _array(tmp_path / "theirs.zarr", data, codec)
    zarr.open_array(theirs, mode="r+")[:] = data
    reader = ShardReader(ShardLayout.load(theirs), "test")  # type: ignore[arg-type]
    np.testing.assert_array_equal(reader.read(0, 150), data)
    np.testing.assert_array_equal(reader.read(17, 133), data[17:133])
    arr = CheckedArray(tmp_path / "theirs.zarr", "a")
    np.testing.assert_array_equal(arr.read_chunk(9), data[144:150])  # trimmed to the array
    np.testing.assert_array_equal(arr[5:70], data[5:70])


def test_missing_shard_reads_as_fill_value(tmp_path: Path) -> None:
    data = _data("float32")
    path = _array(tmp_path / "s.zarr", data, "raw")
    layout = ShardLayout.load(path)
    assert layout is not None
    write_shard_file(layout, 0, data[:64])
    reader = ShardReader(layout, "test")
    got = reader.read(0, 150)
    np.testing.assert_array_equal(got[:64], data[:64])
    assert not got[64:].any()
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], got)


def test_wrong_shard_shape_is_refused(tmp_path: Path) -> None:
    data = _data("float32")
    layout = ShardLayout.load(_array(tmp_path / "s.zarr", data, "raw"))
    assert layout is not None
    with pytest.raises(Exception, match=r"needs shape \(64, 3, 5, 4\)"):
        write_shard_file(layout, 0, data[:63])


@pytest.mark.parametrize("codec", ["raw", "lz4"])
def test_flipped_byte_in_a_chunk_names_the_chunk(tmp_path: Path, codec: str) -> None:
    data = _data("float32")
    path = _array(tmp_path / "s.zarr", data, codec)
    layout = ShardLayout.load(path)
    assert layout is not None
    for i in range(layout.num_shards):
        write_shard_file(layout, i, data[i * 64 : (i + 1) * 64])
    flip_byte(layout.shard_file(1), 0.3)  # inside chunk 5 (the 2nd of shard 1)
    arr = CheckedArray(tmp_path / "s.zarr", "a")
    np.testing.assert_array_equal(arr[0:64], data[:64])  # shard 0 is intact
    with pytest.raises(CorruptStoreError, match=r"array 'a': chunk \(5, 0, 0, 0\) \(samples 80"):
        arr[64:128]
    with pytest.raises(CorruptStoreError, match=r"chunk \(5, 0, 0, 0\)"):
        arr.read_chunk(5)
    with pytest.raises(Exception, match=r"checksum|crc"):  # zarr agrees the chunk is bad
        zarr.open_array(path, mode="r")[64:128]


def test_damaged_index_and_truncated_shard_are_errors(tmp_path: Path) -> None:
    data = _data("float32")
    path = _array(tmp_path / "s.zarr", data, "raw")
    layout = ShardLayout.load(path)
    assert layout is not None
    for i in range(layout.num_shards):
        write_shard_file(layout, i, data[i * 64 : (i + 1) * 64])
    flip_byte(layout.shard_file(0), 0.999)  # inside the index at the end
    with pytest.raises(CorruptStoreError, match="shard index that fails its checksum"):
        ShardReader(layout, "test").read(0, 10)
    f = layout.shard_file(2)
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(CorruptStoreError, match="truncated"):
        ShardReader(layout, "test").read(128, 150)


def test_layouts_left_to_zarr(tmp_path: Path) -> None:
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    ArraySpec("ids", (10,), "str", 10, None, ("sample",)).create(group)
    ArraySpec("labels", (10,), "int32", 10, None, ("sample",)).create(group)  # unsharded
    assert ShardLayout.load(tmp_path / "g.zarr" / "ids") is None
    assert ShardLayout.load(tmp_path / "g.zarr" / "labels") is None
    assert ShardLayout.load(tmp_path / "g.zarr" / "missing") is None
