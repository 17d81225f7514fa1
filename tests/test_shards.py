"""Direct shard I/O against zarr itself: same bytes-level format, same arrays, same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import CorruptStoreError
from pipeline.shards import ShardLayout, ShardReader, copy_checked, crc32c_of, write_shard_file
from pipeline.store import ArraySpec, CheckedArray
from tests.conftest import flip_byte

CODECS = ["raw", "lz4", "lz4-shuffle", "zstd", "zstd-fast"]


def _data(dtype: str, n: int = 150) -> np.ndarray:
    """Real-looking values: a smooth ramp with ReLU zeros (compressible, not constant)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 3, 5, 4)).cumsum(axis=0)
    x = np.maximum(x, 0) * 20
    return x.astype(dtype)


def _array(root: Path, data: np.ndarray, codec: str, chunk: int = 16) -> Path:
    """An empty store array: chunks of ``chunk`` samples, shards of 64."""
    group = zarr.open_group(root, mode="w")
    dims = ("s", "c", "h", "w")
    spec = ArraySpec("a", data.shape, str(data.dtype), chunk, 64, dims, codec=codec)  # type: ignore[arg-type]
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
    rows, crcs = arr.sample_rows(144, 160)  # 16-sample chunks: verified here, trimmed
    np.testing.assert_array_equal(rows, data[144:150])
    assert crcs is None
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
        arr.sample_rows(80, 96)
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


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_one_sample_chunks_hand_out_views_and_the_crc_of_each_copy(
    tmp_path: Path, dtype: str
) -> None:
    """The loader's read: unverified views of the file, each with its sample's crc32c."""
    data = _data(dtype)
    path = _array(tmp_path / "s.zarr", data, "raw", chunk=1)
    layout = ShardLayout.load(path)
    assert layout is not None and layout.chunk == 1
    for i in range(layout.num_shards - 1):  # the last shard (samples 128..149) never written
        write_shard_file(layout, i, data[i * 64 : (i + 1) * 64])
    arr = CheckedArray(tmp_path / "s.zarr", "a")
    rows, crcs = arr.sample_rows(10, 26)
    np.testing.assert_array_equal(rows, data[10:26])
    assert not rows.flags.writeable and not rows.flags.owndata  # a view of the mapped file
    assert crcs == [crc32c_of(np.ascontiguousarray(r)) for r in data[10:26]]
    copy = np.empty_like(rows[3])
    assert copy_checked(copy, rows[3], crcs[3]) and np.array_equal(copy, data[13])
    assert not copy_checked(copy, rows[4], crcs[3])  # another sample's bytes
    # zarr reads what we wrote, sample by sample
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:128], data[:128])
    # across a shard boundary, or chunks never written: read and verified here
    rows, crcs = arr.sample_rows(60, 70)
    assert crcs is None
    np.testing.assert_array_equal(rows, data[60:70])
    rows, crcs = arr.sample_rows(130, 146)
    assert crcs is None and rows.shape == (16, 3, 5, 4) and not rows.any()
    # a flipped byte is not seen by sample_rows (nothing is read) but by the copy's crc
    f = layout.shard_file(0)
    hit = int(f.stat().st_size * 0.5) // (data[0].nbytes + 4)  # the sample whose bytes change
    flip_byte(f, 0.5)
    arr = CheckedArray(tmp_path / "s.zarr", "a")
    rows, crcs = arr.sample_rows(16, 48)
    assert crcs is not None
    bad = [16 + k for k in range(32) if crc32c_of(np.ascontiguousarray(rows[k])) != crcs[k]]
    assert bad == [hit]
    assert f"chunk ({hit}, 0, 0, 0) (samples {hit}..{hit})" in str(arr.corrupt_sample(hit))


def test_one_sample_chunks_written_by_zarr_are_read_alike(tmp_path: Path) -> None:
    data = _data("float32")
    path = _array(tmp_path / "z.zarr", data, "raw", chunk=1)
    zarr.open_array(path, mode="r+")[:] = data
    arr = CheckedArray(tmp_path / "z.zarr", "a")
    for start in (0, 64, 130):
        rows, crcs = arr.sample_rows(start, start + 16)
        np.testing.assert_array_equal(rows, data[start : start + 16])
        if crcs is not None:  # zarr's own layout may or may not be back to back
            assert crcs == [crc32c_of(np.ascontiguousarray(r)) for r in rows]


def test_crc32c_is_castagnoli() -> None:
    """The standard check value of CRC-32C (iSCSI), and zarr's own codec agrees."""
    import google_crc32c  # zarr's checksum library

    check = np.frombuffer(b"123456789", np.uint8)
    assert crc32c_of(check) == 0xE3069283
    data = _data("float32")
    assert crc32c_of(data) == int(google_crc32c.value(data.tobytes()))


def test_short_writes_resume_mid_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``writev`` may write less than asked: the shard file is still whole and exact."""
    import os

    import pipeline.shards as shards

    real = os.writev

    def short(fd: int, buffers: list[memoryview]) -> int:  # at most 1000 bytes a call
        left, cut = 1000, []
        for b in buffers:
            cut.append(b[:left])
            left -= len(cut[-1])
            if not left:
                break
        return real(fd, cut)

    monkeypatch.setattr(shards.os, "writev", short)
    data = _data("float32")
    path = _array(tmp_path / "s.zarr", data, "raw", chunk=1)
    layout = ShardLayout.load(path)
    assert layout is not None
    for i in range(layout.num_shards):
        write_shard_file(layout, i, data[i * 64 : (i + 1) * 64])
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], data)
    np.testing.assert_array_equal(CheckedArray(tmp_path / "s.zarr", "a")[:], data)
