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
its features left zero (``valid`` 0). Above ``max_failure_rate`` of the usable images the
stage stops instead, naming the first failures: an extractor that fails that often has a
bug, and zeros must not pass as data. The shards without failures are kept; those with
failures are written again by the next run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import features
from pipeline.config import as_dict, parse
from pipeline.errors import ConfigError, ExtractionFailedError, StoreError
from pipeline.features.base import Extractor
from pipeline.provenance import feature_provenance
from pipeline.runner import RunnerParams, run_shards
from pipeline.store import (
    ArraySpec,
    Store,
    StoreWriter,
    combine_hashes,
    content_digest,
    identity_of,
    open_store,
    write_shard,
)

__all__ = [
    "ExtractParams",
    "extract_store",
    "extract_stores",
    "parse_extract_section",
]

log = logging.getLogger(__name__)


#: samples per chunk of a compressed feature array when ``chunk_size`` is left to the codec
COMPRESSED_CHUNK = 16


@dataclass(frozen=True)
class ExtractParams:
    """The runner part of the ``extract`` section of ``params.yaml``.

    Attributes
    ----------
    chunk_size : int or None
        Samples per inner chunk of the feature arrays: the unit of compression and of the
        crc32c. ``None`` (the default) picks by codec: one sample per chunk for uncompressed
        features (HOG, LBP), so the training loader checks each sample on the copy it hands
        out (:mod:`pipeline.loader`); :data:`COMPRESSED_CHUNK` samples for compressed ones
        (SIFT, AlexNet), which the loader verifies and decodes whole anyway and which
        compress ~1 point better and write 1.3% faster that way. Shards follow the image
        store's shards, so shard ``i`` of both covers the same samples.
    device : str
        Where networks run (AlexNet layers): ``auto`` (CUDA when available), ``cpu``,
        ``cuda``. Shallow features run on the CPU workers.
    runner : RunnerParams
        Local Dask parallelism.
    max_failure_rate : float
        Share of the usable images an extractor may fail on (each recorded and zeroed);
        above it the stage stops with an error naming the first failures.
    """

    chunk_size: int | None = None
    device: str = "auto"
    runner: RunnerParams = field(default_factory=RunnerParams)
    max_failure_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1 or null, got {self.chunk_size}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(
                f"extract.max_failure_rate must be in [0, 1], got {self.max_failure_rate}"
            )

    def chunk_for(self, codec: str, shard: int) -> int:
        """Samples per chunk of a feature array stored with ``codec`` in shards of ``shard``.

        The largest chunk size up to the asked one that divides the shard.
        """
        chunk = self.chunk_size or (1 if codec == "raw" else COMPRESSED_CHUNK)
        chunk = min(chunk, shard)
        while shard % chunk:
            chunk -= 1
        return chunk

    def resolved_device(self) -> str:
        """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


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
    known = set(features.names()) | set(features.FAMILIES)
    feature_sections = {k: section.pop(k) for k in list(section) if k in known}
    members = {m for family in features.FAMILIES.values() for m in family}
    subsections = sorted((set(features.names()) - members) | set(features.FAMILIES))
    runner = parse(ExtractParams, section, section="extract", subsections=subsections)
    for key, sub in feature_sections.items():  # validate every feature's keys, not just ours
        member = features.FAMILIES[key][0] if key in features.FAMILIES else key
        features.parse_params(member, sub)
    feature_params = features.parse_params(name, feature_sections.get(features.get(name).section))
    return runner, feature_params


class _ShardOutputs:
    """The output arrays of one shard, one per feature name, each made on first use."""

    def __init__(
        self, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], valid: np.ndarray
    ) -> None:
        self.shapes = shapes  # name -> (n, C, h, w)
        self.dtypes = dtypes
        self.valid = valid  # (n,) bool: images to compute
        self.arrays: dict[str, np.ndarray] = {}

    def out(self, name: str) -> np.ndarray:
        """The shard's output array of ``name``, zero where an image is skipped."""
        if name not in self.arrays:
            self.arrays[name] = np.empty(self.shapes[name], self.dtypes[name])
            self.arrays[name][~self.valid] = 0
        return self.arrays[name]

    def put(self, name: str, sel: slice | np.ndarray, value: np.ndarray, whole: bool) -> None:
        """Store a batch's ``value`` at ``sel``; a ``whole`` shard's result is kept, no copy."""
        if whole and value.shape == self.shapes[name] and value.dtype == self.dtypes[name]:
            self.arrays[name] = value
        else:
            self.out(name)[sel] = value


def _compute_batches(
    images: np.ndarray,
    todo: np.ndarray,
    batch_size: int,
    compute: Callable[[np.ndarray], dict[str, np.ndarray]],
    outputs: _ShardOutputs,
    fail: Callable[[int, Exception], None],
) -> None:
    """Run ``compute`` on the ``todo`` images of a shard batch by batch, into ``outputs``.

    A batch that raises is computed again image by image; each image that still raises is
    passed to ``fail`` with its index in the shard.
    """
    for b in range(0, len(todo), batch_size):
        idx = todo[b : b + batch_size]
        # a run of consecutive images is a slice (a view), not a gathered copy
        sel: slice | np.ndarray = (
            slice(int(idx[0]), int(idx[-1]) + 1) if idx[-1] - idx[0] == len(idx) - 1 else idx
        )
        whole = len(idx) == len(images)  # one batch is the whole shard: keep its result
        try:
            for name, value in compute(images[sel]).items():
                outputs.put(name, sel, value, whole)
        except Exception:  # isolate the failing image(s) below, then record them
            for k in idx:
                try:
                    for name, value in compute(images[k : k + 1]).items():
                        outputs.out(name)[k] = value[0]
                except Exception as err:
                    fail(int(k), err)


def _extract_shard(
    index: int,
    *,
    images_path: str,
    targets: dict[str, str],
    names: list[str],
    params: dict[str, Any],
    batch_size: int,
    device: str,
    start: int,
    stop: int,
) -> dict[str, Any]:
    """Task: features of one image-store shard for one or several extractors of a family.

    ``targets`` maps each name whose store still lacks this shard to its scratch folder.
    Runs in a Dask worker; a failure on one image is recorded, never fatal.
    """
    exts = {name: features.get(name) for name in names}
    p = features.parse_params(names[0], params)
    store = open_store(images_path, kind="images")
    images = store.array("images")[start:stop]
    valid = store.array("valid")[start:stop].astype(bool)
    n, h, w = images.shape[:3]
    shapes = {name: (n, *e.output_shape(p, h, w)) for name, e in exts.items()}
    dtypes = {name: np.dtype(e.store_dtype(p)) for name, e in exts.items()}
    outputs = _ShardOutputs(shapes, dtypes, valid)
    ok = valid.copy()
    failures: list[dict[str, Any]] = []
    first = exts[names[0]]

    def compute(batch: np.ndarray) -> dict[str, np.ndarray]:
        if first.compute_many is not None:
            return first.compute_many(batch, p, names, device)
        return {names[0]: first.compute(batch, p)}

    def fail(k: int, err: Exception) -> None:  # recorded per image in the store's attrs
        ok[k] = False
        for name in names:
            outputs.out(name)[k] = 0
        ids = store.array("ids")  # read only when needed (a whole-store array)
        failures.append(
            {
                "index": int(start + k),
                "id": str(ids[start + k : start + k + 1][0]),
                "error": f"{type(err).__name__}: {err}",
            }
        )

    _compute_batches(images, np.flatnonzero(valid), batch_size, compute, outputs, fail)
    for name, scratch in targets.items():
        result = outputs.out(name)
        digest = content_digest(result, ok)
        write_shard(
            scratch,
            index,
            {"features": result, "valid": ok.astype(np.uint8)},
            {"failures": failures, "hash": digest},
        )
    return {"failures": len(failures)}


def _check_failures(name: str, writer: StoreWriter, usable: int, max_rate: float) -> None:
    """Stop when the extractor failed on more than ``max_rate`` of the usable images.

    The shards with failures are marked to be written again (after a fix, a rerun redoes
    only them); the others are kept.

    Raises
    ------
    ExtractionFailedError
        Naming the failure count, the rate and the first failures.
    """
    meta = writer.shard_meta()
    failures = [f for m in meta for f in m["failures"]]
    if not failures or len(failures) <= max_rate * usable:
        return
    writer.redo_shards([i for i, m in enumerate(meta) if m["failures"]])
    first = "\n  ".join(f"{f['id']}: {f['error']}" for f in failures[:5])
    raise ExtractionFailedError(
        f"extract {name} failed on {len(failures)} of {usable} images "
        f"({len(failures) / max(usable, 1):.1%}, above extract.max_failure_rate "
        f"{max_rate:.1%}): a bug in the extractor or its parameters, not bad images. "
        f"First failures:\n  {first}\n"
        "Fix the cause and rerun: the shards without failures are kept."
    )


def _check_one_family(names: list[str], exts: Mapping[str, Extractor]) -> None:
    """Several features extract in one pass only as layers of one network (one family)."""
    families = {e.family for e in exts.values()}
    if len(names) > 1 and (len(families) != 1 or None in families):
        raise ConfigError(
            f"features {names} are not one family; extract them one at a time (a single pass "
            f"serves several layers of one network only)"
        )


def _feature_arrays(
    ext: Extractor, params: Any, run: ExtractParams, images: Store
) -> list[ArraySpec]:
    """The arrays of ``ext``'s feature store over ``images``, sharded as the image store."""
    n, h, w = images.array("images").shape[:3]
    shard = int(images.attrs["shard_size"])
    shape = ext.output_shape(params, h, w)
    return [
        ArraySpec(
            "features",
            (n, *shape),
            ext.store_dtype(params),
            run.chunk_for(ext.codec, shard),
            shard,
            ("sample", *ext.dims),
            codec=ext.codec,
        ),
        ArraySpec("valid", (n,), "uint8", shard, shard, ("sample",)),
        ArraySpec("ids", (n,), "str", n, None, ("sample",)),
        ArraySpec("labels", (n,), "int32", n, None, ("sample",)),
        ArraySpec("split", (n,), "uint8", n, None, ("sample",)),
    ]


def _open_images(images_path: str | Path) -> Store:
    """The image store at ``images_path``, refused when it holds no usable image."""
    images = open_store(images_path, kind="images")
    if not images.array("valid")[:].any():
        n = images.array("images").shape[0]
        raise StoreError(
            f"image store {str(images_path)!r} holds no usable image (all {n} skipped, see its "
            "attrs 'skipped'); rebuild it from a source with readable images (invert prepare)"
        )
    return images


def _shared_args(
    images_path: str | Path, names: list[str], params: Any, batch_size: int, device: str
) -> dict[str, Any]:
    """Keyword arguments of :func:`_extract_shard` common to every shard."""
    return {
        "images_path": str(Path(images_path).absolute()),
        "names": list(names),
        "params": as_dict(params),
        "batch_size": batch_size,
        "device": device,
    }


def _shard_tasks(
    todo: Mapping[str, StoreWriter], shared: Mapping[str, Any]
) -> dict[int, dict[str, Any]]:
    """Keyword arguments of :func:`_extract_shard` for every shard some store of ``todo`` lacks.

    ``shared`` holds the arguments common to all shards; each task adds its ``targets``
    (name -> scratch folder of the stores lacking it) and its sample range.
    """
    pending: dict[int, dict[str, str]] = {}
    for name, writer in todo.items():
        for i in writer.pending_shards():
            pending.setdefault(i, {})[name] = str(writer.scratch)
    any_writer = next(iter(todo.values()))
    tasks = {}
    for i in sorted(pending):
        start, stop = any_writer.shard_bounds(i)
        tasks[i] = {**shared, "targets": pending[i], "start": start, "stop": stop}
    return tasks


def _finalize(name: str, ext: Extractor, writer: StoreWriter, params: Any, images: Store) -> Path:
    """Log the first failures, copy the sample metadata and finalise ``name``'s store."""
    meta = writer.shard_meta()
    failures = [f for m in meta for f in m["failures"]]
    for f in failures[:20]:
        log.warning("extract %s failed on %s: %s", name, f["id"], f["error"])
    for key in ("ids", "labels", "split"):
        writer.copy_small(key, images)
    content = combine_hashes([m["hash"] for m in meta])
    attrs = {
        "extractor": {"name": name, "version": ext.version, "description": ext.description},
        "failures": failures,
        "splits": images.attrs.get("splits"),
        "random_weights": bool(ext.describe(params).get("random_weights", False)),
    }
    fingerprint = identity_of({"content": content, "identity": writer.identity})
    return writer.finalize(fingerprint=fingerprint, attrs=attrs)


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
        Chunking, device and local parallelism.
    overwrite, wait : bool
        See :class:`pipeline.store.StoreWriter`.
    scheduler_address : str, optional
        A ``dask.distributed`` scheduler whose workers run the tasks.

    Returns
    -------
    Path
        The complete feature store.
    """
    paths = extract_stores(
        [name],
        images_path,
        {name: out},
        params=params,
        run=run,
        overwrite=overwrite,
        wait=wait,
        scheduler_address=scheduler_address,
    )
    return paths[name]


def extract_stores(
    names: list[str],
    images_path: str | Path,
    outs: Mapping[str, str | Path],
    *,
    params: Any | None = None,
    run: ExtractParams | None = None,
    overwrite: bool = False,
    wait: bool = True,
    scheduler_address: str | None = None,
) -> dict[str, Path]:
    """Several features of one family (e.g. AlexNet layers) from one pass over the images.

    Parameters
    ----------
    names : list of str
        Registered features; more than one must share a family (one forward pass).
    images_path : str or Path
    outs : mapping of str to path
        The store of each name.
    params, run, overwrite, wait, scheduler_address
        As :func:`extract_store`; ``params`` is the family's parameters.

    Returns
    -------
    dict of str to Path
        The complete stores.
    """
    exts = {name: features.get(name) for name in names}
    _check_one_family(names, exts)
    first = exts[names[0]]
    params = params if params is not None else first.params_type()
    run = run or ExtractParams()
    images = _open_images(images_path)
    n = images.array("images").shape[0]
    with contextlib.ExitStack() as stack:
        writers: dict[str, StoreWriter] = {}
        for name, ext in exts.items():
            arrays = _feature_arrays(ext, params, run, images)
            provenance = feature_provenance(name, params, images)
            writers[name] = stack.enter_context(
                StoreWriter(outs[name], provenance, arrays, overwrite=overwrite, wait=wait)
            )
        todo = {name: w for name, w in writers.items() if not w.up_to_date}
        if not todo:
            log.info("%s up to date", ", ".join(str(w.out) for w in writers.values()))
            return {name: w.out for name, w in writers.items()}
        device = run.resolved_device()
        shared = _shared_args(images_path, names, params, run.runner.batch_size, device)
        tasks = _shard_tasks(todo, shared)
        label = names[0] if len(names) == 1 else f"{first.family} ({len(names)} layers)"
        log.info(
            "extract %s: %d images, %d shards (%d to do) on %s",
            label,
            n,
            next(iter(todo.values())).num_shards,
            len(tasks),
            device,
        )
        runner = run.runner
        if device.startswith("cuda") and runner.workers != 1:
            runner = RunnerParams(workers=1, scheduler="threads", batch_size=runner.batch_size)
        run_shards(
            _extract_shard,
            tasks,
            runner=runner,
            scheduler_address=scheduler_address,
            desc=f"extract {label}",
        )
        usable = int(np.count_nonzero(images.array("valid")[:]))
        for name, writer in todo.items():
            _check_failures(name, writer, usable, run.max_failure_rate)
        return {
            name: w.out if w.up_to_date else _finalize(name, exts[name], w, params, images)
            for name, w in writers.items()
        }
