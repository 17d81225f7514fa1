"""Faults and bad input: a disk that fills, a corrupted chunk, malformed ``params.yaml``."""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.errors import ConfigError
from pipeline.extract import ExtractParams, extract_store
from pipeline.features.hog import HogParams
from pipeline.provenance import open_feature_store
from pipeline.runner import RunnerParams
from pipeline.store import open_store
from stages.cli import main
from tests.conftest import flip_byte

RUN = ExtractParams(chunk_size=8, runner=RunnerParams(workers=2, batch_size=8))
#: Largest file the limited run may write. A HOG shard at cell_size 8 (16 images) is ~1.7 MB
#: and ~4x that at cell_size 4, so the new store's first shard cannot be written.
FILE_SIZE_LIMIT = 1 << 20


# -- a disk that fills ---------------------------------------------------------------------
def _limit_file_size() -> None:
    """In the child: writes past FILE_SIZE_LIMIT fail with EFBIG instead of killing it."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.fixture(scope="module")
def disk_full(
    image_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str], bytes, np.ndarray]:
    """A complete HOG store, then `--overwrite` with cell_size 4 under a file-size limit.

    Returns the store, the failed run, the store's ``zarr.json`` and features before it.
    """
    root = tmp_path_factory.mktemp("full")
    out = extract_store("hog", image_store, root / "hog.zarr", run=RUN)
    before = (out / "zarr.json").read_bytes(), open_store(out).array("features")[:]
    params = root / "params.yaml"
    params.write_text("extract:\n  chunk_size: 8\n  hog: {cell_size: 4}\n")
    cmd = [sys.executable, "-m", "stages", "extract", "hog", "--images", str(image_store)]
    cmd += ["--out", str(out), "--params", str(params), "--overwrite"]
    result = subprocess.run(
        cmd, preexec_fn=_limit_file_size, capture_output=True, text=True, timeout=300
    )
    return out, result, *before


def test_disk_full_fails_and_keeps_the_previous_store(
    disk_full: tuple[Path, subprocess.CompletedProcess[str], bytes, np.ndarray],
) -> None:
    out, result, meta, feats = disk_full
    assert result.returncode != 0, result.stdout
    assert "File too large" in result.stderr  # the cause (EFBIG) reaches the user
    # the complete store made before is untouched and still accepted
    assert (out / "zarr.json").read_bytes() == meta
    store = open_feature_store(out, "hog", HogParams(cell_size=8))
    np.testing.assert_array_equal(store.array("features")[:], feats)
    # once there is room again, the same command finishes the new store
    params = out.parent / "params.yaml"
    cmd = [sys.executable, "-m", "stages", "extract", "hog", "--images"]
    cmd += [str(result.args[result.args.index("--images") + 1]), "--out", str(out)]
    cmd += ["--params", str(params), "--overwrite"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert open_feature_store(out, "hog", HogParams(cell_size=4)).array("features").shape[2] == 64


def test_disk_full_is_a_one_line_error(
    disk_full: tuple[Path, subprocess.CompletedProcess[str], bytes, np.ndarray],
) -> None:
    _, result, _, _ = disk_full
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "Error: StoreError:" in result.stderr and "rerun" in result.stderr


# -- a corrupted chunk ---------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_corrupted_image_chunk_names_store_array_and_chunk(
    image_store: Path, tmp_path: Path, scheduler: str
) -> None:
    images = Path(shutil.copytree(image_store, tmp_path / "images.zarr"))
    shard = images / "images" / "c" / "1" / "0" / "0" / "0"  # shard 1: samples 16..31
    hit = 16 + int(shard.stat().st_size * 0.3) // (256 * 256 * 3 + 4)  # one chunk per sample
    flip_byte(shard, 0.3)
    out = tmp_path / "hog.zarr"
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    args = ["extract", "hog", "--images", str(images), "--out", str(out), "--params", str(params)]
    result = CliRunner().invoke(main, [*args, "--scheduler", scheduler])
    assert result.exit_code == 1, result.output
    assert f"CorruptStoreError: store {str(images)!r}, array 'images': chunk (" in result.output
    assert f"chunk ({hit}, 0, 0, 0) (samples {hit}..{hit})" in result.output
    assert "fails its checksum" in result.output
    assert not out.exists()


# -- malformed params.yaml -----------------------------------------------------------------
BAD_PARAMS: list[Any] = [
    # prepare
    (
        "prepare",
        "prepare: {shard_sise: 8}",
        "unknown key(s) 'shard_sise' (did you mean 'shard_size'?) in params section 'prepare'",
    ),
    ("prepare", "prepare: {limit: many}", "prepare.limit: expected an integer or null, got 'many'"),
    ("prepare", "prepare: {strict: 'yes'}", "prepare.strict: expected true or false, got 'yes'"),
    ("prepare", "prepare: {size: 256.0}", "prepare.size: expected an integer, got 256.0"),
    ("prepare", "prepare: {crop_scale: [0.5]}", "params section 'prepare': crop_scale must be"),
    ("prepare", "prepare: {test_photos: [lena]}", "test_photos ['lena'] are not sample photo"),
    (
        "prepare",
        "prepare: {holdout_photos: [astronaut]}",
        "['astronaut'] are in both test_photos and holdout_photos",
    ),
    (
        "prepare",
        "prepare: {test_photos: [motorcycle_left]}",
        "are views of one photograph",
    ),
    ("prepare", "prepare: {shard_size: 10, chunk_size: 4}", "shard_size (10) must be a positive"),
    # prepare.runner
    ("prepare", "prepare: {runner: {threads: 2}}", "'threads' in params section 'prepare.runner'"),
    ("prepare", "prepare: {runner: {workers: two}}", "prepare.runner.workers: expected an integer"),
    ("prepare", "prepare: {runner: {scheduler: gpu}}", "prepare.runner.scheduler: must be one of"),
    # extract
    (
        "extract",
        "extract: {chunks: 3}",
        "unknown key(s) 'chunks' (did you mean 'chunk_size'?) in params section 'extract'",
    ),
    (
        "extract",
        "extract: {chunk_size: '16'}",
        "extract.chunk_size: expected an integer or null, got '16'",
    ),
    ("extract", "extract: {chunk_size: 0}", "params section 'extract': chunk_size must be >= 1"),
    # extract.runner
    (
        "extract",
        "extract: {runner: {worker: 2}}",
        "'worker' (did you mean 'workers'?) in params section 'extract.runner'",
    ),
    ("extract", "extract: {runner: {workers: -1}}", "'extract.runner': workers must be >= 0"),
    ("extract", "extract: {runner: {scheduler: mpi}}", "extract.runner.scheduler: must be one of"),
    ("extract", "extract: {runner: {batch_size: 0}}", "'extract.runner': batch_size must be >= 1"),
    # extract.hog
    (
        "extract",
        "extract: {hog: {cellsize: 8}}",
        "'cellsize' (did you mean 'cell_size'?) in params section 'extract.hog'",
    ),
    ("extract", "extract: {hog: {cell_size: eight}}", "extract.hog.cell_size: expected an integer"),
    ("extract", "extract: {hog: {cell_size: 1}}", "cell_size must be >= 2"),
    (
        "extract",
        "extract: {hog: {num_orientations: 9.5}}",
        "extract.hog.num_orientations: expected",
    ),
    ("extract", "extract: {hog: 5}", "params section 'extract.hog' must be a mapping, got 5"),
    # the file itself
    ("extract", "extract: {hog: [", "is not valid YAML"),
]
BAD_PARAMS += [
    ("prepare", "prepare: oops", "section 'prepare' must be a mapping"),
    ("prepare", "prepare: {runner: [1]}", "'prepare.runner' must be a mapping"),
    ("extract", "extract: [1, 2]", "section 'extract' must be a mapping"),
    ("extract", "extract: {runner: 5}", "'extract.runner' must be a mapping"),
]


@pytest.mark.parametrize(("command", "text", "message"), BAD_PARAMS)
def test_bad_params_name_the_key_before_any_store_exists(
    image_store: Path, tmp_path: Path, command: str, text: str, message: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text + "\n")
    out = tmp_path / "new" / "out.zarr"  # StoreWriter would create `new/` and a lock in it
    args = [command, "--out", str(out), "--params", str(params)]
    if command == "extract":
        args[1:1] = ["hog", "--images", str(image_store)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert "Error: ConfigError: " in result.output and message in result.output, result.output
    assert not (tmp_path / "new").exists()


# -- an empty extract.alexnet.layers, a malformed --out template -----------------------------
def test_empty_alexnet_layers_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """``layers: []`` says which key to fill, before any image is read (was an IndexError)."""
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  alexnet: {layers: []}\n")
    out = tmp_path / "new" / "{name}.zarr"
    args = ["extract", "alexnet", "--images", str(tmp_path / "absent.zarr"), "--out", str(out)]
    args += ["--params", str(params)]
    with pytest.raises(
        click.ClickException,
        match=r"^ConfigError: no layers to extract: extract\.alexnet\.layers is empty; list at "
        r"least one of conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8$",
    ) as raised:
        CliRunner().invoke(main, args, standalone_mode=False, catch_exceptions=False)
    assert isinstance(raised.value.__cause__, ConfigError)
    result = CliRunner().invoke(main, args)  # as a user sees it: one line, exit status 1
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Error: ConfigError: no layers to extract: extract.alexnet.layers" in result.output
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("out", "error"),
    [("x/{nme}.zarr", "KeyError"), ("x/{0}.zarr", "IndexError"), ("x/{.zarr", "ValueError")],
)
def test_extract_out_template_with_another_field_is_a_usage_error(
    tmp_path: Path, out: str, error: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("extract: {}\n")
    args = ["extract", "hog", "--images", str(tmp_path / "absent.zarr")]
    args += ["--out", str(tmp_path / out), "--params", str(params)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"is not a path template ({error}: " in result.output
    assert "the only field it may hold is {name}" in result.output
    assert not (tmp_path / "x").exists()
