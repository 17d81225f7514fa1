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


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def settle() -> None:
    """Flush the previous run's written pages so the kernel's writeback does not run inside
    the next timed call (untimed)."""
    os.sync()


def interleaved_best(repeat: int, *fns: Callable[[], Any]) -> list[float]:
    """Best time of each function over ``repeat`` rounds that run them one after another.

    Interleaving gives every contender the same share of this VM's slow spells (whole
    runs here vary by up to 40% from minute to minute); the best time is its own cost.
    A function with a ``setup`` attribute has it called, untimed, before each run.
    """
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            getattr(fn, "setup", lambda: None)()
            settle()
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="invert-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def image_store(root: Path, n: int) -> Path:
    params = PrepareParams(train_samples=n, test_samples=0, test_photos=(), shard_size=64)
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
        "| feature | extractor alone s | `extract_store` s | runner overhead | same run: wall "
        "over the extractor's own compute time |",
        "|---|---|---|---|---|",
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
            extract_store(_name, store, root / f"{_name}.zarr", run=_run)

        whole.setup = lambda _n=name: shutil.rmtree(root / f"{_n}.zarr", ignore_errors=True)  # type: ignore[attr-defined]
        t_alone, t_whole = interleaved_best(repeat, alone, whole)
        inside = _overhead_inside_one_run(name, store, root, run, repeat)
        rows.append(
            f"| {name} | {t_alone:.2f} | {t_whole:.2f} | {100 * (t_whole / t_alone - 1):+.1f}% "
            f"| {inside} |"
        )
    return rows


def _overhead_inside_one_run(
    name: str, store: Path, root: Path, run: ExtractParams, repeat: int
) -> str:
    """Whole-run wall time against the extractor's own compute time in that same run.

    Immune to this VM's slow spells (they stretch both); the extractor is wrapped with a
    timer, and its summed thread time divided by the workers is what the run would take
    with nothing but the extractor. Load imbalance between workers counts as overhead.
    """
    import dataclasses
    import threading

    original = features.get(name)
    spent: list[float] = []
    lock = threading.Lock()

    def timed(x: np.ndarray, p: Any) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return original.compute(x, p)
        finally:
            with lock:
                spent.append(time.perf_counter() - t0)

    wrapped = dataclasses.replace(original, compute=timed)
    real_get = features.get
    features.get = lambda n: wrapped if n == name else real_get(n)  # type: ignore[assignment]
    ratios = []
    try:
        for _ in range(repeat):
            shutil.rmtree(root / f"{name}-t.zarr", ignore_errors=True)
            settle()
            spent.clear()
            t0 = time.perf_counter()
            extract_store(name, store, root / f"{name}-t.zarr", run=run)
            wall = time.perf_counter() - t0
            ratios.append(wall / (sum(spent) / run.runner.num_workers) - 1)
    finally:
        features.get = real_get  # type: ignore[assignment]
    ratios.sort()
    return f"{100 * ratios[len(ratios) // 2]:+.1f}% (median of {len(ratios)})"


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


def bench_activations(store: Path, root: Path, repeat: int) -> list[str]:
    """AlexNet: bytes per sample per layer, and extract vs a bare forward of the same batches."""
    from pipeline.alexnet import LAYERS
    from pipeline.alexnet.activations import AlexNetParams, activations
    from pipeline.extract import extract_stores

    images = open_store(store).array("images")[:]
    params = AlexNetParams()
    batch = 64
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    activations(images[:2], params, list(LAYERS))  # build the network once (memoised)

    def bare() -> None:
        for x in batches:
            activations(x, params, list(LAYERS))

    workers = os.cpu_count() or 1

    def bare_parallel() -> None:  # the runner's parallelism: a 1-thread forward per core
        with limit_threads(1), ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda x: activations(x, params, list(LAYERS)), batches))

    run = ExtractParams(device="cpu", runner=RunnerParams(workers=0, batch_size=batch))
    outs = {name: root / "act" / f"{name}.zarr" for name in LAYERS}

    def whole() -> None:
        extract_stores(list(LAYERS), store, outs, params=params, run=run)

    whole.setup = lambda: shutil.rmtree(root / "act", ignore_errors=True)  # type: ignore[attr-defined]

    t_bare, t_par, t_whole = interleaved_best(repeat, bare, bare_parallel, whole)
    t_ref = min(t_bare, t_par)
    rows = [
        f"AlexNet (caffenet, {params.weights}), {len(images)} images, all 8 layers, CPU:",
        "",
        "| what | seconds | overhead |",
        "|---|---|---|",
        f"| bare forward, batches of {batch}, {torch_threads()} threads | {t_bare:.2f} | |",
        f"| bare forward, {workers} batches at once, 1 thread each | {t_par:.2f} | |",
        f"| `extract_stores` (read, forward, float16, compress, write) | {t_whole:.2f} | "
        f"{100 * (t_whole / t_ref - 1):+.1f}% over the faster bare forward |",
        "",
        "| layer | float32 bytes/sample | stored bytes/sample | stored / float32 |",
        "|---|---|---|---|",
    ]
    for name in LAYERS:
        arr = open_store(outs[name]).array("features")
        raw = int(np.prod(arr.shape[1:])) * 4
        files = [p for p in (outs[name] / "features").rglob("*") if p.is_file()]
        stored = sum(p.stat().st_size for p in files) / arr.shape[0]
        rows.append(f"| {name} | {raw} | {stored:.0f} | {100 * stored / raw:.1f}% |")
    x = activations(images[:64], params, list(LAYERS))
    rows += ["", "| layer | float16 max rel. error | bfloat16 max rel. error |", "|---|---|---|"]
    import torch

    for name in LAYERS:
        v = torch.from_numpy(x[name])
        scale = float(v.abs().max())
        e16 = float((v.half().float() - v).abs().max()) / scale
        ebf = float((v.bfloat16().float() - v).abs().max()) / scale
        rows.append(f"| {name} | {e16:.1e} | {ebf:.1e} |")
    return rows


def bench_loader(root: Path, store: Path, repeat: int) -> list[str]:
    """Training loader: samples/s from the stores against a raw .npy memmap and a train step.

    One thread throughout (a DataLoader worker runs torch with one thread; two threads made
    the stores' side look 15% faster than it is per worker).
    """
    import warnings

    import torch

    from pipeline import decoders
    from pipeline.loader import LoaderParams, StoreStream
    from pipeline.shards import crc32c_of

    feats_path = root / "hog-loader.zarr"
    extract_store("hog", store, feats_path, run=ExtractParams())
    f_arr = open_store(feats_path).array("features")[:]
    x_arr = open_store(store).array("images")[:]
    np.save(root / "f.npy", f_arr)
    np.save(root / "x.npy", x_arr)
    batch, nb = 32, 16
    stream = StoreStream(store, feats_path, batch_size=batch, params=LoaderParams(workers=0))

    it = iter(stream)  # opened once, like the memmaps below; every timed call reads on

    def from_store() -> None:
        for _ in range(nb):
            next(it)

    fm = np.load(root / "f.npy", mmap_mode="r")
    xm = np.load(root / "x.npy", mmap_mode="r")

    blocks = stream._samples(0, 1, 0)
    pending: list[int] = []

    def from_memmap() -> None:  # the stream's own batches, gathered from the memmaps
        for _ in range(nb):
            while len(pending) < batch:
                pending.extend(next(blocks)[1].tolist())
            rows = np.sort(pending[:batch])  # the stream orders a batch by sample index
            del pending[:batch]
            StoreStream._batch(xm[rows], fm[rows])  # one gather copy each, as the stream

    with warnings.catch_warnings():  # read-only maps, never written to
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        xt, ft = torch.from_numpy(xm), torch.from_numpy(fm)

    def from_memmap_torch() -> None:  # the same, gathered by torch.index_select
        for _ in range(nb):
            while len(pending) < batch:
                pending.extend(next(blocks)[1].tolist())
            rows = torch.from_numpy(np.sort(pending[:batch]))
            del pending[:batch]
            x = torch.from_numpy(np.empty((batch, *xm.shape[1:]), xm.dtype))
            f = torch.from_numpy(np.empty((batch, *fm.shape[1:]), fm.dtype))
            torch.index_select(xt, 0, rows, out=x)
            torch.index_select(ft, 0, rows, out=f)

    def checksum_only() -> None:  # one crc32c pass over the same bytes in memory
        rows = np.arange(nb * batch) % len(fm)
        for i in rows.tolist():
            crc32c_of(xm[i])
            crc32c_of(fm[i])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from_store()  # warm-up: the first mapping of each shard file / memmap page
        from_memmap()
        from_memmap_torch()
        t_store, t_np, t_torch, t_crc = interleaved_best(
            repeat, from_store, from_memmap, from_memmap_torch, checksum_only
        )
    finally:
        torch.set_num_threads(threads)
    t_mm = min(t_np, t_torch)  # the reference: the faster of two ways to gather from a memmap
    model = decoders.build("hog", width=0.25)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    f = torch.from_numpy(f_arr[:batch])
    y = torch.from_numpy(x_arr[:batch]).permute(0, 3, 1, 2).float() / 255 - 0.5

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t_step = best_of(repeat, step)
    s_store, s_mm, s_step = nb * batch / t_store, nb * batch / t_mm, batch / t_step
    return [
        "HOG features + 256x256 images, batches of 32, one loader worker (process), 1 thread:",
        "",
        "| what | samples/s | ratio |",
        "|---|---|---|",
        f"| loader from the Zarr stores (every sample's crc32c checked) | {s_store:.0f} | "
        f"{100 * s_store / s_mm:.0f}% of memmap |",
        f"| same batches from uncompressed .npy memmaps (numpy or torch gather, the faster) | "
        f"{s_mm:.0f} | |",
        f"| crc32c of the same bytes alone, from memory | {nb * batch / t_crc:.0f} | "
        f"a separate checksum pass would cap the loader at "
        f"{100 / (1 + t_crc / t_mm):.0f}% of memmap |",
        f"| HOG decoder train step, width 0.25, {threads} threads | {s_step:.0f} | "
        f"loader / step = {s_store / s_step:.1f}x |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=256, help="images per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="best of N interleaved runs")
    parser.add_argument(
        "--only", nargs="*", default=["features", "runner", "schedulers", "activations", "loader"]
    )
    parser.add_argument(
        "--features",
        nargs="*",
        default=None,
        help="feature names (default: every registered shallow feature)",
    )
    args = parser.parse_args()
    if len(args.only) > 1:
        # each section in a fresh process: one section's libraries (VLFeat's OpenMP threads,
        # allocator state) slowed the next one's figures by up to 15 points
        import subprocess
        import sys

        for section in args.only:
            cmd = [sys.executable, __file__, "--images", str(args.images), "--repeat"]
            cmd += [str(args.repeat), "--only", section]
            if args.features:
                cmd += ["--features", *args.features]
            subprocess.run(cmd, check=True)
        return
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
        if "activations" in args.only:
            print("## AlexNet activations\n")
            print("\n".join(bench_activations(store, root, args.repeat)), "\n")
        if "loader" in args.only:
            print("## Training loader\n")
            print("\n".join(bench_loader(root, store, args.repeat)), "\n")


def _available(name: str) -> bool:
    try:
        features.get(name)
    except (ImportError, AttributeError):
        return False
    return True


if __name__ == "__main__":
    main()
