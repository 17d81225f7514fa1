"""HDF5 interchange: export layout and attrs, round trips, foreign (MATLAB / NCHW) imports."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import store
from pipeline.errors import ConfigError, CorruptStoreError, StoreError
from pipeline.extract import ExtractParams, extract_store
from pipeline.features.hog import HogParams
from pipeline.interchange import export_hdf5, import_hdf5
from pipeline.provenance import open_feature_store
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from stages.interchange import export, import_

RUN = ExtractParams(chunk_size=8, runner=RunnerParams(workers=2, batch_size=8))
ARRAYS = ("features", "valid", "ids", "labels", "split")


@pytest.fixture(scope="module")
def hog_store(image_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOG of the 48 conftest photographs: 3 shards of 16, chunks of 8."""
    return extract_store("hog", image_store, tmp_path_factory.mktemp("hog") / "hog.zarr", run=RUN)


@pytest.fixture(scope="module")
def hog_values(hog_store: Path) -> np.ndarray:
    """(48, 31, 32, 32) float32: the HOG features as the NCHW reference of foreign files."""
    return open_store(hog_store).array("features")[:]


def test_export_is_chunked_compressed_and_carries_the_attrs(
    hog_store: Path, tmp_path: Path
) -> None:
    out = export_hdf5(hog_store, tmp_path / "hog.h5")
    src = open_store(hog_store)
    with h5py.File(out, "r") as f:
        assert sorted(k for k in f if not k.startswith("_")) == sorted(ARRAYS)
        feats = f["features"]
        assert feats.shape == (48, 31, 32, 32) and feats.dtype == np.float32
        assert feats.chunks == (8, 31, 32, 32)  # the store's inner chunk
        assert feats.compression == "gzip" and feats.shuffle and feats.fletcher32
        assert list(feats.attrs["dims"]) == ["sample", "channel", "y", "x"]
        assert [d.label for d in feats.dims] == ["sample", "channel", "y", "x"]
        assert h5py.check_string_dtype(f["ids"].dtype).encoding == "utf-8"
        assert list(f["ids"].asstr()[:]) == list(src.array("ids")[:])
        np.testing.assert_array_equal(feats[:], src.array("features")[:])
        # nested attrs as JSON strings (listed), plain ones as they are
        assert json.loads(f.attrs["provenance"]) == src.provenance
        assert f.attrs["fingerprint"] == src.fingerprint
        assert int(f.attrs["num_samples"]) == 48 and bool(f.attrs["complete"])
        assert {"provenance", "failures", "extractor"} <= set(f.attrs["json_attrs"])
    assert [p.name for p in tmp_path.iterdir()] == ["hog.h5"]  # no temporary left
    lzf = export_hdf5(hog_store, tmp_path / "lzf.h5", compression="lzf", chunk_samples=4)
    with h5py.File(lzf, "r") as f:
        assert f["features"].compression == "lzf" and f["features"].chunks[0] == 4


def test_export_streams_one_shard_at_a_time(
    hog_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = store.CheckedArray.__getitem__

    def counting(self: store.CheckedArray, selection: Any) -> np.ndarray:
        block = original(self, selection)
        if self.shards is not None:
            reads.append(len(block))
        return block

    monkeypatch.setattr(store.CheckedArray, "__getitem__", counting)
    export_hdf5(hog_store, tmp_path / "hog.h5")
    assert reads and max(reads) == 16  # one shard (16 samples), never the 48-sample array


def test_round_trip_is_the_same_store(hog_store: Path, image_store: Path, tmp_path: Path) -> None:
    h5 = export_hdf5(hog_store, tmp_path / "hog.h5")
    back = import_hdf5(h5, tmp_path / "back.zarr", kind="features")
    a, b = open_store(hog_store), open_store(back)
    for name in ARRAYS:
        np.testing.assert_array_equal(a.array(name)[:], b.array(name)[:])
        assert a.array(name).chunks == b.array(name).chunks
        assert a.array(name).shards == b.array(name).shards
    assert b.provenance == a.provenance and b.fingerprint == a.fingerprint
    assert b.attrs["identity"] == a.attrs["identity"]
    assert b.attrs["failures"] == a.attrs["failures"] and b.attrs["splits"] == a.attrs["splits"]
    # accepted exactly where the original is
    open_feature_store(back, "hog", HogParams(), images=open_store(image_store))
    # image stores round-trip too
    img = import_hdf5(export_hdf5(image_store, tmp_path / "img.h5"), tmp_path / "img.zarr")
    np.testing.assert_array_equal(
        open_store(img).array("images")[:], open_store(image_store).array("images")[:]
    )
    assert open_store(img).attrs["identity"] == open_store(image_store).attrs["identity"]
    assert open_store(img).fingerprint == open_store(image_store).fingerprint
    with pytest.raises(ConfigError, match=r"holds a 'images' store, not a 'features' one"):
        import_hdf5(tmp_path / "img.h5", tmp_path / "x.zarr", kind="features")


def test_changed_export_is_refused(hog_store: Path, tmp_path: Path) -> None:
    h5 = export_hdf5(hog_store, tmp_path / "hog.h5")
    with h5py.File(h5, "r+") as f:
        f["features"][20, 0, 0, 0] += 1.0  # shard 1 (samples 16..31)
    with pytest.raises(
        CorruptStoreError, match=r"dataset 'features': shard 1 does not match the sha256"
    ):
        import_hdf5(h5, tmp_path / "back.zarr")
    assert not (tmp_path / "back.zarr").exists()
    partial = export_hdf5(hog_store, tmp_path / "part.h5", arrays=["features"])
    with pytest.raises(StoreError, match=r"holds only the arrays \['features'\]"):
        import_hdf5(partial, tmp_path / "back.zarr")
    with pytest.raises(StoreError, match=r"has no array\(s\) 'feats'; it has: features"):
        export_hdf5(hog_store, tmp_path / "x.h5", arrays=["feats"])
    with pytest.raises(StoreError, match=r"already exists; pass --overwrite"):
        export_hdf5(hog_store, h5)


def _write_foreign(path: Path, data: np.ndarray, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=data, chunks=True, compression="gzip")
        for name, values in datasets.items():
            f.create_dataset(name, data=values)
    return path


def test_foreign_nchw_and_matlab_files(hog_values: np.ndarray, tmp_path: Path) -> None:
    n = len(hog_values)
    ids = np.array([f"img{i:03d}".encode() for i in range(n)])  # fixed-length bytes, as MATLAB
    nchw = _write_foreign(tmp_path / "nchw.h5", hog_values.astype(np.float64), ids=ids)
    # MATLAB: vl_hog gives h x w x 31 per image, stacked along dim 4 -> [h w C N], column-major;
    # its bytes are the C-order bytes of the transposed array, which h5py sees as (N, C, w, h)
    matlab_array = np.asfortranarray(hog_values.transpose(2, 3, 1, 0))  # [h w C N]
    matlab = _write_foreign(tmp_path / "matlab.h5", matlab_array.T)
    # a non-square case shows which axes are swapped: MATLAB [h=4 w=6 C=3 N=2] -> (2, 3, 6, 4)
    small = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)  # (N, C, h, w)
    wide = _write_foreign(tmp_path / "wide.h5", np.asfortranarray(small.transpose(2, 3, 1, 0)).T)
    assert h5py.File(wide, "r")["features"].shape == (2, 3, 6, 4)
    back = import_hdf5(wide, tmp_path / "wide.zarr", layout="matlab", shard_size=2, chunk_size=1)
    np.testing.assert_array_equal(open_store(back).array("features")[:], small)
    layouts: list[tuple[Path, Literal["nchw", "matlab"]]] = [(nchw, "nchw"), (matlab, "matlab")]
    for path, layout in layouts:
        out = import_hdf5(path, tmp_path / f"{layout}.zarr", layout=layout, shard_size=16)
        s = open_store(out, kind="features", expect={"producer": "import"})
        np.testing.assert_array_equal(s.array("features")[:], hog_values)
        prov = s.provenance
        assert prov["stage"] == "import" and prov["source_file"] == path.name
        assert prov["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert prov["layout"] == layout and prov["dims"] == ["sample", "channel", "y", "x"]
        assert s.array("valid")[:].all() and (s.array("labels")[:] == -1).all()
        assert s.array("features").shards == (16, 31, 32, 32)
    assert list(open_store(tmp_path / "nchw.zarr").array("ids")[:3]) == [
        "img000",
        "img001",
        "img002",
    ]
    assert list(open_store(tmp_path / "matlab.zarr").array("ids")[:2]) == ["0", "1"]


def test_foreign_import_resumes_after_a_failure(
    hog_values: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import interchange

    src = _write_foreign(tmp_path / "f.h5", hog_values)
    calls: list[int] = []
    real = interchange.write_shard

    def dies_on_third(scratch: Any, index: int, *args: Any) -> None:
        if len(calls) == 2:
            raise OSError("disk unplugged")
        calls.append(index)
        real(scratch, index, *args)

    monkeypatch.setattr(interchange, "write_shard", dies_on_third)
    out = tmp_path / "f.zarr"
    with pytest.raises(OSError, match="disk unplugged"):
        import_hdf5(src, out, shard_size=8, chunk_size=8)
    assert not out.exists()  # nothing half-made is visible
    resumed: list[int] = []

    def recording(scratch: Any, index: int, *args: Any) -> None:
        resumed.append(index)
        real(scratch, index, *args)

    monkeypatch.setattr(interchange, "write_shard", recording)
    import_hdf5(src, out, shard_size=8, chunk_size=8)
    assert resumed == [2, 3, 4, 5]  # shards 0 and 1 were kept
    clean = import_hdf5(src, tmp_path / "clean.zarr", shard_size=8, chunk_size=8)
    np.testing.assert_array_equal(open_store(out).array("features")[:], hog_values)
    assert open_store(out).fingerprint == open_store(clean).fingerprint


def test_foreign_file_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    out = tmp_path / "o.zarr"
    path = _write_foreign(tmp_path / "a.h5", good, other=np.zeros(3))
    with pytest.raises(StoreError, match=r"has no dataset 'feats'; it has: features, other"):
        import_hdf5(path, out, dataset="feats")
    _write_foreign(path, good[0])
    with pytest.raises(StoreError, match=r"shape \(3, 5, 5\) \(3 dimensions\); --layout nchw"):
        import_hdf5(path, out)
    _write_foreign(path, good, ids=np.array([b"a", b"b"]))
    with pytest.raises(StoreError, match=r"ids dataset 'ids' .* shape \(2,\); expected \(4,\)"):
        import_hdf5(path, out)
    with pytest.raises(StoreError, match=r"no dataset 'names' for the ids"):
        import_hdf5(path, out, ids="names")
    with pytest.raises(ConfigError, match=r"only be imported as feature stores"):
        import_hdf5(path, out, kind="images")
    with pytest.raises(ConfigError, match=r"shard_size \(10\) must be a positive multiple"):
        import_hdf5(path, out, shard_size=10, chunk_size=4, ids="ids")
    with pytest.raises(StoreError, match=r"no HDF5 file at"):
        import_hdf5(tmp_path / "missing.h5", out)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match=r"is not a readable HDF5 file"):
        import_hdf5(tmp_path / "text.h5", out)
    assert not out.exists()


def test_cli_export_then_import(hog_store: Path, hog_values: np.ndarray, tmp_path: Path) -> None:
    runner = CliRunner()
    h5 = tmp_path / "hog.h5"
    r = runner.invoke(export, [str(hog_store), "--format", "hdf5", "--out", str(h5)])
    assert r.exit_code == 0 and "hdf5 file ready" in r.output, r.output
    r = runner.invoke(export, [str(hog_store), "--out", str(h5)])
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.output
    r = runner.invoke(
        import_, [str(h5), "--out", str(tmp_path / "back.zarr"), "--kind", "features"]
    )
    assert r.exit_code == 0 and "store ready" in r.output, r.output
    assert open_store(tmp_path / "back.zarr").fingerprint == open_store(hog_store).fingerprint
    matlab = _write_foreign(
        tmp_path / "m.h5", np.asfortranarray(hog_values.transpose(2, 3, 1, 0)).T
    )
    r = runner.invoke(
        import_, [str(matlab), "--out", str(tmp_path / "m.zarr"), "--layout", "matlab"]
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(open_store(tmp_path / "m.zarr").array("features")[:], hog_values)
    r = runner.invoke(import_, [str(matlab), "--out", str(tmp_path / "x.zarr"), "--dataset", "hog"])
    assert r.exit_code == 1 and "StoreError: " in r.output and "has no dataset 'hog'" in r.output
    assert "Traceback" not in r.output
