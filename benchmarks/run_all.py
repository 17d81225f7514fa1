"""Every performance figure of the pipeline, each a ratio measured in one run on this machine.

    python benchmarks/run_all.py                 # all sections
    python benchmarks/run_all.py --only features --images 128

Sections:

- ``features``: images/s of our HOG / LBP / SIFT against VLFeat (cyvlfeat / libvl.so) on the
  same 256×256 photographs, one core each (VLFeat is single-threaded), and their max
  difference;
- ``runner``: ``extract_store`` (read shards, decompress, compute, compress, write, Dask) against
  the extractor alone on the same images with the same parallelism — the runner's overhead;
- ``schedulers``: local Dask ``threads`` against ``processes`` per extractor.

Timings are the best of ``--repeat`` runs. Nothing here asserts a speed: it prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import features
from pipeline.extract import ExtractParams, extract_store
from pipeline.images import PrepareParams, prepare
from pipeline.runner import RunnerParams, limit_threads
from pipeline.store import open_store

#: the VLFeat reference of each shallow feature: module attribute name
REFERENCES = {"hog": "hog_vlfeat", "lbp": "lbp_vlfeat", "sift": None}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="invert-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def image_store(root: Path, n: int) -> Path:
    params = PrepareParams(
        train_samples=n, test_samples=0, test_photos=(), shard_size=64, chunk_size=16
    )
    return prepare("sample", root / "images.zarr", params)


def _reference(name: str) -> Callable[[np.ndarray, Any], np.ndarray] | None:
    """VLFeat's version of feature ``name`` with our calling convention, if there is one."""
    ext = features.get(name)
    if name == "sift":
        vlfeat = ext.params_type(backend="vlfeat")
        return lambda x, _p: ext.compute(x, vlfeat)
    module = importlib.import_module(f"pipeline.features.{name}")
    ref_name = REFERENCES.get(name)
    return getattr(module, ref_name) if ref_name and hasattr(module, ref_name) else None


def _feature_row(name: str, images: np.ndarray, repeat: int) -> str:
    ext = features.get(name)
    params = ext.params_type()
    ref = _reference(name)
    with limit_threads(1):
        ext.compute(images[:8], params)  # warm-up (tables, allocator)
        t_ours = best_of(repeat, lambda: ext.compute(images, params))
        ours = ext.compute(images, params)
        if ref is None:
            return f"| {name} | {len(images) / t_ours:.1f} | – | – | – |"
        try:
            ref(images[:2], params)
        except Exception as err:  # a missing VLFeat is reported, not fatal
            return f"| {name} | {len(images) / t_ours:.1f} | n/a ({err}) | – | – |"
        t_ref = best_of(repeat, lambda: ref(images, params))
        diff = float(np.abs(ours - ref(images, params)).max())
    return (
        f"| {name} | {len(images) / t_ours:.1f} | {len(images) / t_ref:.1f} | "
        f"{t_ref / t_ours:.2f}x | {diff:.2e} |"
    )


def bench_features(images: np.ndarray, names: list[str], repeat: int) -> list[str]:
    rows = ["| feature | ours img/s | VLFeat img/s | ours / VLFeat | max abs diff |"]
    rows.append("|---|---|---|---|---|")
    rows += [_feature_row(name, images, repeat) for name in names]
    return rows


def bench_runner(store: Path, root: Path, names: list[str], repeat: int) -> list[str]:
    images = open_store(store).array("images")[:]
    workers = os.cpu_count() or 1
    batch = 64
    rows = [
        "| feature | extractor alone s | `extract_store` s | runner overhead |",
        "|---|---|---|---|",
    ]
    for name in names:
        ext = features.get(name)
        params = ext.params_type()
        batches = [images[i : i + batch] for i in range(0, len(images), batch)]

        def alone(_ext: Any = ext, _p: Any = params, _b: list[np.ndarray] = batches) -> None:
            with limit_threads(1), ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda x: _ext.compute(x, _p), _b))

        run = ExtractParams(runner=RunnerParams(workers=workers, batch_size=batch))

        def whole(_name: str = name, _run: ExtractParams = run) -> None:
            out = root / f"{_name}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            extract_store(_name, store, out, run=_run)

        t_alone = best_of(repeat, alone)
        t_whole = best_of(repeat, whole)
        rows.append(
            f"| {name} | {t_alone:.2f} | {t_whole:.2f} | {100 * (t_whole / t_alone - 1):+.1f}% |"
        )
    return rows


def bench_schedulers(store: Path, root: Path, names: list[str], repeat: int) -> list[str]:
    rows = ["| feature | threads s | processes s | faster |", "|---|---|---|---|"]
    for name in names:
        times = {}
        for sched in ("threads", "processes"):
            run = ExtractParams(runner=RunnerParams(scheduler=sched))  # type: ignore[arg-type]

            def whole(_run: ExtractParams = run, _name: str = name) -> None:
                out = root / f"{_name}-s.zarr"
                shutil.rmtree(out, ignore_errors=True)
                extract_store(_name, store, out, run=_run)

            times[sched] = best_of(repeat, whole)
        fast = min(times, key=lambda k: times[k])
        rows.append(f"| {name} | {times['threads']:.2f} | {times['processes']:.2f} | {fast} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=256, help="images per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--only", nargs="*", default=["features", "runner", "schedulers"])
    parser.add_argument(
        "--features",
        nargs="*",
        default=None,
        help="feature names (default: every registered shallow feature)",
    )
    args = parser.parse_args()
    names = args.features or [n for n in ("hog", "lbp", "sift") if _available(n)]
    import logging

    logging.getLogger("pipeline").setLevel(logging.WARNING)
    print(f"machine: {machine()}")
    with workdir() as root:
        store = image_store(root, args.images)
        images = open_store(store).array("images")[:]
        print(f"images: {len(images)} crops of scikit-image photographs, 256x256 RGB\n")
        if "features" in args.only:
            print("## Shallow features against VLFeat (one core each)\n")
            print("\n".join(bench_features(images, names, args.repeat)), "\n")
        if "runner" in args.only:
            print(f"## Runner overhead ({os.cpu_count()} workers, threads)\n")
            print("\n".join(bench_runner(store, root, names, args.repeat)), "\n")
        if "schedulers" in args.only:
            print("## Local Dask scheduler per extractor\n")
            print("\n".join(bench_schedulers(store, root, names, args.repeat)), "\n")


def _available(name: str) -> bool:
    try:
        features.get(name)
    except (ImportError, AttributeError):
        return False
    return True


if __name__ == "__main__":
    main()
