"""Fill a feature store from an image store (``invert extract FEATURE``).

One task per shard of the image store: it reads that shard's images, runs the registered
extractor batch by batch, and writes the same shard of the feature store. The feature store
has the image store's sample order, ids, labels and split, plus:

=========  ===========================  =============================================
array      shape / dtype                meaning
=========  ===========================  =============================================
features   (N, C, h, w) float32         e.g. (N, 31, 32, 32) for HOG of 256×256 images
valid      (N,) uint8                   0 where the image was skipped or failed
=========  ===========================  =============================================

A failure on one image is recorded (index, id, error) in the store's attrs ``failures`` and
its features left zero; it never stops the run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import features
from pipeline.config import as_dict, parse
from pipeline.errors import ConfigError
from pipeline.runner import RunnerParams, run_shards
from pipeline.store import (
    ArraySpec,
    Store,
    StoreWriter,
    combine_hashes,
    identity_of,
    open_store,
    write_shard,
)

__all__ = [
    "ExtractParams",
    "extract_store",
    "feature_provenance",
    "open_feature_store",
    "parse_extract_section",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractParams:
    """The runner part of the ``extract`` section of ``params.yaml``.

    Attributes
    ----------
    chunk_size : int
        Samples per inner chunk of the feature arrays (one random read of the loader).
        Shards follow the image store's shards, so shard ``i`` of both covers the same
        samples.
    runner : RunnerParams
        Local Dask parallelism.
    """

    chunk_size: int = 16
    runner: RunnerParams = field(default_factory=RunnerParams)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")


def parse_extract_section(
    section: Mapping[str, Any] | None, name: str
) -> tuple[ExtractParams, Any]:
    """Split the ``extract`` section into runner params and feature ``name``'s params.

    Parameters
    ----------
    section : mapping or None
        ``{chunk_size, runner, <feature>: {...}, ...}``; keys that are registered feature
        names hold that extractor's parameters.
    name : str
        The feature being extracted.

    Returns
    -------
    ExtractParams, params dataclass of the extractor
    """
    section = dict(section or {})
    feature_sections = {k: section.pop(k) for k in list(section) if k in features.names()}
    runner = parse(ExtractParams, section, section="extract")
    feature_params = features.parse_params(name, feature_sections.get(name))
    return runner, feature_params


def feature_provenance(name: str, params: Any, images: Store) -> dict[str, Any]:
    """What makes feature store ``name``: extractor, its version and params, the input."""
    extractor = features.get(name)
    return {
        "kind": "features",
        "stage": "extract",
        "producer": name,
        "extractor_version": extractor.version,
        "params": as_dict(params),
        "input_fingerprint": images.fingerprint,
        "image_size": list(images.array("images").shape[1:3]),
        "dims": ["sample", *extractor.dims],
    }


def open_feature_store(
    path: str | Path, name: str, params: Any | None = None, *, images: Store | None = None
) -> Store:
    """Open feature store ``name`` and refuse one made differently.

    Parameters
    ----------
    path : str or Path
    name : str
        The feature the store must hold.
    params : params dataclass, optional
        The parameters it must have been made with (e.g. from ``params.yaml``).
    images : Store, optional
        The image store it must have been made from.

    Raises
    ------
    IncompatibleStoreError
        Another feature, other parameters, another extractor version or another input.
    """
    expect: dict[str, Any] = {
        "producer": name,
        "extractor_version": features.get(name).version,
    }
    if params is not None:
        expect["params"] = as_dict(params)
    if images is not None:
        expect["input_fingerprint"] = images.fingerprint
    return open_store(path, kind="features", expect=expect)


def _extract_shard(
    index: int,
    *,
    images_path: str,
    scratch: str,
    name: str,
    params: dict[str, Any],
    batch_size: int,
    start: int,
    stop: int,
) -> dict[str, Any]:
    """Task: features of one image-store shard (runs in a Dask worker)."""
    extractor = features.get(name)
    p = features.parse_params(name, params)
    store = open_store(images_path, kind="images")
    images = store.array("images")[start:stop]
    valid = store.array("valid")[start:stop].astype(bool)
    ids = store.array("ids")[start:stop]
    n, h, w = images.shape[:3]
    out = np.zeros((n, *extractor.output_shape(p, h, w)), np.float32)
    ok = valid.copy()
    failures: list[dict[str, Any]] = []
    todo = np.flatnonzero(valid)
    for b in range(0, len(todo), batch_size):
        idx = todo[b : b + batch_size]
        try:
            out[idx] = extractor.compute(images[idx], p)
        except Exception:
            for k in idx:
                try:
                    out[k] = extractor.compute(images[k : k + 1], p)[0]
                except Exception as err:
                    ok[k] = False
                    failures.append(
                        {
                            "index": int(start + k),
                            "id": str(ids[k]),
                            "error": f"{type(err).__name__}: {err}",
                        }
                    )
    digest = hashlib.sha256(out.tobytes() + ok.tobytes()).hexdigest()
    write_shard(
        scratch,
        index,
        {"features": out, "valid": ok.astype(np.uint8)},
        {"failures": failures, "hash": digest},
    )
    return {"failures": len(failures)}


def extract_store(
    name: str,
    images_path: str | Path,
    out: str | Path,
    *,
    params: Any | None = None,
    run: ExtractParams | None = None,
    overwrite: bool = False,
    wait: bool = True,
    scheduler_address: str | None = None,
) -> Path:
    """Compute feature ``name`` for every image of an image store into a feature store.

    Parameters
    ----------
    name : str
        A registered feature.
    images_path : str or Path
        An image store made by ``invert prepare``.
    out : str or Path
        The feature store to write (resumed if a run with the same inputs was killed).
    params : params dataclass, optional
        The extractor's parameters; paper defaults when omitted.
    run : ExtractParams, optional
        Chunking and local parallelism.
    overwrite, wait : bool
        See :class:`pipeline.store.StoreWriter`.
    scheduler_address : str, optional
        A ``dask.distributed`` scheduler whose workers run the tasks.

    Returns
    -------
    Path
        The complete feature store.
    """
    extractor = features.get(name)
    params = params if params is not None else extractor.params_type()
    run = run or ExtractParams()
    images = open_store(images_path, kind="images")
    img = images.array("images")
    n, h, w = img.shape[:3]
    shard = int(images.attrs["shard_size"])
    shape = extractor.output_shape(params, h, w)
    chunk = min(run.chunk_size, shard)
    while shard % chunk:
        chunk -= 1  # the largest chunk size <= chunk_size that divides the shard
    arrays = [
        ArraySpec(
            "features",
            (n, *shape),
            "float32",
            chunk,
            shard,
            ("sample", *extractor.dims),
            codec="lz4",
        ),
        ArraySpec("valid", (n,), "uint8", shard, shard, ("sample",)),
        ArraySpec("ids", (n,), "str", n, None, ("sample",)),
        ArraySpec("labels", (n,), "int32", n, None, ("sample",)),
        ArraySpec("split", (n,), "uint8", n, None, ("sample",)),
    ]
    provenance = feature_provenance(name, params, images)
    with StoreWriter(out, provenance, arrays, overwrite=overwrite, wait=wait) as writer:
        if writer.up_to_date:
            log.info("%s is up to date", writer.out)
            return writer.out
        shared = {
            "images_path": str(Path(images_path).absolute()),
            "scratch": str(writer.scratch),
            "name": name,
            "params": as_dict(params),
            "batch_size": run.runner.batch_size,
        }
        tasks = {}
        for i in writer.pending_shards():
            start, stop = writer.shard_bounds(i)
            tasks[i] = {**shared, "start": start, "stop": stop}
        log.info(
            "extract %s: %d images, %d shards (%d to do)", name, n, writer.num_shards, len(tasks)
        )
        run_shards(
            _extract_shard,
            tasks,
            runner=run.runner,
            scheduler_address=scheduler_address,
            desc=f"extract {name}",
        )
        meta = writer.shard_meta()
        failures = [f for m in meta for f in m["failures"]]
        for f in failures:
            log.warning("extract %s failed on %s: %s", name, f["id"], f["error"])
        for key in ("ids", "labels", "split"):
            writer.write_small(key, images.array(key)[:])
        content = combine_hashes([m["hash"] for m in meta])
        attrs = {
            "extractor": {
                "name": name,
                "version": extractor.version,
                "description": extractor.description,
            },
            "failures": failures,
            "splits": images.attrs.get("splits"),
        }
        return writer.finalize(
            fingerprint=identity_of({"content": content, "identity": writer.identity}), attrs=attrs
        )
