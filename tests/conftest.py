"""Shared fixtures: small real image stores built from scikit-image's photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.images import PrepareParams, prepare
from pipeline.runner import RunnerParams


def small_prepare_params(**overrides: object) -> PrepareParams:
    base: dict[str, object] = dict(
        train_samples=40,
        test_samples=8,
        shard_size=16,
        chunk_size=1,
        runner=RunnerParams(workers=2, batch_size=16),
    )
    base.update(overrides)
    return PrepareParams(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 real photographs (crops of skimage.data), 3 shards of 16."""
    out = tmp_path_factory.mktemp("stores") / "images.zarr"
    return prepare("sample", out, small_prepare_params())


@pytest.fixture(scope="session")
def photo_batch() -> np.ndarray:
    """(4, 256, 256, 3) uint8: centre crops of four colour photographs."""
    import skimage.data

    from pipeline.images import resize_center_crop

    photos = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
    ]
    return np.stack([resize_center_crop(p, 256) for p in photos])


def flip_byte(path: Path, offset_fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * offset_fraction)] ^= 0xFF
    path.write_bytes(bytes(data))
