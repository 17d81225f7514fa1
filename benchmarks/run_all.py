"""Every performance figure of the pipeline, each a ratio measured in one run on this machine.

    python benchmarks/run_all.py                 # all sections
    python benchmarks/run_all.py --only features --images 128

Sections (each in its own process; every row says what it times, in which process, on how
many threads):

- ``features``: images/s of our HOG / LBP / SIFT against VLFeat (cyvlfeat / libvl.so) on the
  same 256×256 photographs, one core each (VLFeat is single-threaded), and their max
  difference; LBP on the grey images (the grey conversion is outside both timed regions);
- ``cores``: every core on both sides: ``extract()`` (the Python API) and ``invert extract``
  (the stage, in-process) against VLFeat run in one process per core;
- ``runner``: ``extract_store`` (read shards, decompress, compute, compress, write, Dask) against
  the extractor alone on the same images with the same parallelism — the runner's overhead;
- ``schedulers``: local Dask ``threads`` against ``processes`` per extractor;
- ``activations``: AlexNet extraction against a bare forward, stored bytes per layer;
- ``loader``: the training DataLoader as ``invert train`` builds it against the same batches
  from page-cached ``.npy`` memmaps through the same DataLoader settings, and against the
  consumption of a width-1.0 HOG training step.

The contenders of a section run interleaved, round after round (``interleaved_best``): this
VM has slow spells of up to 40% that a best-of-N of one contender after the other does not
even out. Each figure is a contender's best round. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
from pipeline.config import load_section, parse
from pipeline.extract import ExtractParams, extract_store
from pipeline.images import PrepareParams, prepare
from pipeline.runner import RunnerParams, limit_threads
from pipeline.store import open_store


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from pipeline.features.base import _import_numba, kernel_backend

    backend = kernel_backend()  # INVERT_KERNELS, or numba where it is installed
    if backend == "numba":
        backend = f"numba {_import_numba().__version__}"
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, shallow-feature kernels: {backend}"
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


#: params.yaml beside this folder: the stores here are laid out as `dvc repro` lays them out
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def shard_size() -> int:
    """``prepare.shard_size`` of params.yaml: the image store's shard, which the feature
    stores follow (one runner task per shard; a small shard makes per-task costs weigh)."""
    return parse(PrepareParams, load_section(PARAMS, "prepare"), section="prepare").shard_size


def image_store(root: Path, n: int) -> Path:
    """``n`` sample crops in an image store with params.yaml's shard size."""
    params = PrepareParams(train_samples=n, test_samples=0, test_photos=(), shard_size=shard_size())
    return prepare("sample", root / "images.zarr", params)


# -- VLFeat, called the way its users call it -----------------------------------------------
def vl_hog(images: np.ndarray) -> np.ndarray:
    """VLFeat's ``vl_hog(im2single(im), 8)`` per image through cyvlfeat (as ``hog_vlfeat``)."""
    from pipeline.features.hog import hog_vlfeat

    return hog_vlfeat(images)


def vl_lbp(grey: np.ndarray, cell_size: int = 16) -> np.ndarray:
    """VLFeat's ``vl_lbp(grey, cell_size)`` per image: what the MEX file does, through ctypes.

    Parameters
    ----------
    grey : (N, H, W) ndarray of float32
        Grey images (MATLAB: ``single(rgb2gray(im)) / 255``), converted beforehand.

    Returns
    -------
    (N, 58, H // cell_size, W // cell_size) ndarray of float32
    """
    from pipeline.features.lbp import _VL_LBP_UNIFORM, _libvl

    lib = _libvl()
    n, height, width = grey.shape
    out = np.empty((n, 58, height // cell_size, width // cell_size), np.float32)
    for i in range(n):  # one vl_lbp call per image: new, process, delete (toolbox/misc/vl_lbp.c)
        handle = lib.vl_lbp_new(_VL_LBP_UNIFORM, 0)
        try:
            lib.vl_lbp_process(
                handle, out[i].ctypes.data, grey[i].ctypes.data, width, height, cell_size
            )
        finally:
            lib.vl_lbp_delete(handle)
    return out


def grey_for_vlfeat(images: np.ndarray) -> np.ndarray:
    """RGB uint8 to the grey float32 images ``vl_lbp`` takes, with our kernel's conversion.

    The conversion our LBP kernel runs inside (``lbp._kernel._grey_rgb``, numba, one pass per
    image) gives VLFeat ``to_grey``'s values (MATLAB ``rgb2gray`` weights, so VLFeat computes
    the same LBP as ours) at the cost our side pays: equal on both sides. OpenCV's table
    lookups (``lbp._grey``, our numpy path) cost VLFeat's side about as much as ``vl_lbp``
    itself, which would flatter ours.

    Parameters
    ----------
    images : (N, H, W, 3) ndarray of uint8

    Returns
    -------
    (N, H, W) ndarray of float32
    """
    from pipeline.features.lbp import _grey_tables
    from pipeline.features.lbp._kernel import _grey_rgb

    tables = _grey_tables()
    grey = np.empty(images.shape[:3], np.float32)
    for image, out in zip(images, grey):
        _grey_rgb(image, tables, out)
    return grey


def vl_sift(images: np.ndarray) -> np.ndarray:
    """VLFeat's ``vl_sift`` per image through cyvlfeat, laid out on our grid of cells."""
    from pipeline.features.sift import SiftParams, sift

    return sift(images, SiftParams(backend="vlfeat"))


def _vlfeat_available(name: str) -> str | None:
    """None where VLFeat's ``name`` runs here, else why not."""
    try:
        x = np.zeros((1, 32, 32, 3), np.uint8)
        if name == "lbp":
            vl_lbp(np.zeros((1, 32, 32), np.float32))
        else:
            {"hog": vl_hog, "sift": vl_sift}[name](x)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


# -- one core each ---------------------------------------------------------------------------
def _one_core_row(
    name: str,
    what: str,
    ours: Callable[[], np.ndarray],
    ref: Callable[[], np.ndarray],
    n: int,
    repeat: int,
) -> str:
    with limit_threads(1):
        ours()  # warm-up (tables, allocator)
        ref()
        t_ours, t_ref = interleaved_best(repeat, ours, ref)
        agreement = _agreement(name, ours(), ref())
    return (
        f"| {name} | {what} | {n / t_ours:.1f} | {n / t_ref:.1f} | **{t_ref / t_ours:.2f}x** | "
        f"{agreement} |"
    )


def _agreement(name: str, ours: np.ndarray, ref: np.ndarray) -> str:
    """Max abs difference; for SIFT (other keypoints), the share of cells that agree."""
    if name != "sift":
        return f"max abs diff {float(np.abs(ours - ref).max()):.1e}"
    from pipeline.features.sift import SIFT_CHANNELS

    present = SIFT_CHANNELS - 1  # the presence flag
    same = float(np.mean(ours[:, present] == ref[:, present]))
    return f"{100 * same:.2f}% of cells agree on a keypoint (`benchmarks/sift_agreement.py`)"


def bench_features(images: np.ndarray, names: list[str], repeat: int) -> list[str]:
    from pipeline.features.base import to_grey
    from pipeline.features.hog import hog
    from pipeline.features.lbp import lbp
    from pipeline.features.sift import sift

    n = len(images)
    grey = to_grey(images)  # (N, H, W) float32, once, outside every timed region
    rows = [
        "Main process, one thread each: torch.set_num_threads(1), cv2.setNumThreads(1); "
        "VLFeat is single-threaded. Contenders interleaved, best of "
        f"{repeat} rounds.",
        "",
        "| feature | timed: ours vs VLFeat | ours img/s | VLFeat img/s | ours / VLFeat | "
        "agreement |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        why = _vlfeat_available(name)
        if why is not None:
            rows.append(f"| {name} | VLFeat not available: {why} | | | | |")
            continue
        if name == "hog":
            rows.append(
                _one_core_row(
                    "hog",
                    "`hog(images)` (uint8 to float inside) vs `vl_hog(im2single(im), 8)` "
                    "per image through cyvlfeat (conversion inside)",
                    lambda: hog(images),
                    lambda: vl_hog(images),
                    n,
                    repeat,
                )
            )
        elif name == "lbp":
            rows.append(
                _one_core_row(
                    "lbp",
                    "`lbp(grey)` vs `vl_lbp(grey, 16)` per image (libvl.so through ctypes); "
                    "the same float32 grey images, converted once before timing",
                    lambda: lbp(grey),
                    lambda: vl_lbp(grey),
                    n,
                    repeat,
                )
            )
            rows.append(
                _one_core_row(
                    "lbp",
                    "`lbp(images)` from RGB uint8, our grey conversion timed, vs the same "
                    "`vl_lbp(grey, 16)` (its conversion not timed)",
                    lambda: lbp(images),
                    lambda: vl_lbp(grey),
                    n,
                    repeat,
                )
            )
            rows.append(
                _one_core_row(
                    "lbp",
                    "both from RGB uint8: `lbp(images)` vs `vl_lbp(grey_for_vlfeat(images), "
                    "16)`, each side's grey conversion timed (the same grey values)",
                    lambda: lbp(images),
                    lambda: vl_lbp(grey_for_vlfeat(images)),
                    n,
                    repeat,
                )
            )
        elif name == "sift":
            rows.append(
                _one_core_row(
                    "sift",
                    "`sift(images)` (opencv backend) vs `sift(images, backend=vlfeat)`: "
                    "`vl_sift` per image through cyvlfeat; both convert to grey and fill the "
                    "grid inside",
                    lambda: sift(images),
                    lambda: vl_sift(images),
                    n,
                    repeat,
                )
            )
    return rows


# -- every core ------------------------------------------------------------------------------
_POOL_STATE: dict[str, Any] = {}


def _pool_init(
    images_name: str, shape: tuple[int, ...], dtype: str, out_name: str, out_shape: tuple[int, ...]
) -> None:
    """A VLFeat worker process: attach the shared images and output, one thread."""
    from multiprocessing import shared_memory

    _POOL_STATE["shm"] = [
        shared_memory.SharedMemory(images_name),
        shared_memory.SharedMemory(out_name),
    ]
    _POOL_STATE["images"] = np.ndarray(shape, dtype, buffer=_POOL_STATE["shm"][0].buf)
    _POOL_STATE["out"] = np.ndarray(out_shape, np.float32, buffer=_POOL_STATE["shm"][1].buf)


def _pool_task(task: tuple[str, int, int]) -> None:
    """VLFeat's ``name`` on images ``lo:hi``, written into the shared output."""
    name, lo, hi = task
    x = _POOL_STATE["images"][lo:hi]
    if name == "hog":
        _POOL_STATE["out"][lo:hi] = vl_hog(x)
    elif name == "lbp":
        _POOL_STATE["out"][lo:hi] = vl_lbp(x)  # grey images, converted before timing
    elif name == "lbp-rgb":  # RGB uint8: a VLFeat user's conversion, then vl_lbp
        _POOL_STATE["out"][lo:hi] = vl_lbp(grey_for_vlfeat(x))
    else:
        _POOL_STATE["out"][lo:hi] = vl_sift(x)


class VlfeatPool:
    """VLFeat in one process per core, the way a VLFeat user parallelises (``parfor``).

    Generous to VLFeat: the processes start before timing, read the images from shared
    memory and write the features into shared memory (nothing pickled), and take parts of
    16 images as they free up, as ``extract()``'s threads do. Task ``lbp`` takes grey
    images (``to_grey``, MATLAB's ``rgb2gray``) converted before timing, so VLFeat's side
    does no conversion while ours (``extract`` from RGB) does; task ``lbp-rgb`` takes the
    RGB images and converts them in the workers (:func:`grey_for_vlfeat`).
    """

    def __init__(self, images: np.ndarray, out_shape: tuple[int, ...], workers: int) -> None:
        import multiprocessing as mp
        from multiprocessing import shared_memory

        self.n = len(images)
        self.shm_in = shared_memory.SharedMemory(create=True, size=images.nbytes)
        np.ndarray(images.shape, images.dtype, buffer=self.shm_in.buf)[:] = images
        size = int(np.prod(out_shape)) * 4
        self.shm_out = shared_memory.SharedMemory(create=True, size=size)
        self.out = np.ndarray(out_shape, np.float32, buffer=self.shm_out.buf)
        ctx = mp.get_context("spawn")  # a clean process: no inherited torch/OpenMP threads
        self.pool = ctx.Pool(
            workers,
            initializer=_pool_init,
            initargs=(
                self.shm_in.name,
                images.shape,
                str(images.dtype),
                self.shm_out.name,
                out_shape,
            ),
        )
        self.workers = workers

    def run(self, name: str) -> np.ndarray:
        part = max(1, min(16, -(-self.n // (4 * self.workers))))  # extract()'s parts
        tasks = [(name, lo, min(lo + part, self.n)) for lo in range(0, self.n, part)]
        self.pool.map(_pool_task, tasks, chunksize=1)
        return self.out

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
        for shm in (self.shm_in, self.shm_out):
            shm.close()
            shm.unlink()


#: The every-core section gives each contender rounds of at least this long on VLFeat's
#: side: a command's start (params, store headers, thread pool) then weighs as on a real store
#: rather than dominating a 40 ms round (LBP on 512 images).
CORES_MIN_ROUND_S = 1.0


def _images_for_a_round(store: Path, root: Path, name: str, cores: int) -> Path:
    """An image store with enough images for a VLFeat round of ``CORES_MIN_ROUND_S``.

    VLFeat's rate on ``store``'s images (one timed round in ``cores`` processes) sets the
    count, rounded up to whole shards; ``store`` itself when it is already enough.
    """
    from pipeline.features.base import to_grey

    images = open_store(store).array("images")[:]
    ext = features.get(name)
    shape = (len(images), *ext.output_shape(ext.params_type(), 256, 256))
    pool = VlfeatPool(to_grey(images) if name == "lbp" else images, shape, cores)
    try:
        pool.run(name)  # warm-up
        t0 = time.perf_counter()
        pool.run(name)
        rate = len(images) / (time.perf_counter() - t0)
    finally:
        pool.close()
    shard = shard_size()
    need = -(-int(rate * CORES_MIN_ROUND_S) // shard) * shard
    if need <= len(images):
        return store
    bigger = root / f"images-{need}"
    bigger.mkdir(exist_ok=True)
    return image_store(bigger, need)


def bench_cores(store: Path, root: Path, names: list[str], repeat: int) -> list[str]:
    """Every core on both sides: ``extract()`` and ``invert extract`` vs VLFeat in processes.

    Each feature runs on enough images that VLFeat's round lasts ``CORES_MIN_ROUND_S``
    (:func:`_images_for_a_round`); every contender of a row times the same images.
    """
    import subprocess
    import sys

    from pipeline.features.base import to_grey
    from stages.cli import main as invert

    cores = os.cpu_count() or 1
    rows = [
        f"{cores} cores on both sides, on the same images per row (column 'images': as many "
        f"as VLFeat computes in {CORES_MIN_ROUND_S:g} s or more, so that a command's start "
        "weighs as on a real store). Ours: `extract(name, images)` in the main process "
        f"({cores} threads, each computing parts of 16 images with one torch and one OpenCV "
        "thread); `invert extract NAME --images STORE --out OUT` run in-process "
        f"(stages.cli.main: reads the image store, computes with {cores} Dask threads, "
        "writes the feature store); the same command as a new process (interpreter and "
        f"imports included), once per round. VLFeat: {cores} worker processes started "
        "before timing, parts of 16 images from shared memory into shared memory "
        "(`VlfeatPool`). LBP has two rows: 'VLFeat given grey' gets the grey images "
        "converted before timing (ours converts from RGB inside `extract()`); 'both from "
        "RGB' converts in its workers as a VLFeat user must (`grey_for_vlfeat`: the same "
        "grey values, OpenCV table lookups), as our command does from the RGB image store. "
        "Interleaved, best of "
        f"{repeat} rounds.",
        "",
        "| feature | images | `extract()` img/s | `invert extract` img/s (new process) | "
        f"VLFeat x {cores} processes img/s | `extract()` / VLFeat | `invert extract` / VLFeat "
        "(new process) | agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for name in names:
        why = _vlfeat_available(name)
        if why is not None:
            rows.append(f"| {name} | VLFeat not available: {why} | | | | | | |")
            continue
        images_path = _images_for_a_round(store, root, name, cores)
        images = open_store(images_path).array("images")[:]
        n = len(images)
        ext = features.get(name)
        shape = (n, *ext.output_shape(ext.params_type(), 256, 256))
        out = root / f"{name}-cli.zarr"
        args = ["extract", name, "--images", str(images_path), "--out", str(out)]
        args += ["--params", str(PARAMS)]

        def api(_name: str = name, _images: np.ndarray = images) -> np.ndarray:
            return features.extract(_name, _images)

        def stage(_args: list[str] = args) -> None:
            sink = io.StringIO()  # its messages and progress bars, untimed work aside
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                invert(_args, standalone_mode=False)

        def stage_process(_args: list[str] = args) -> None:
            cmd = [sys.executable, "-m", "stages", *_args]
            subprocess.run(cmd, check=True, env=env, capture_output=True)

        clean = lambda _o=out: shutil.rmtree(_o, ignore_errors=True)  # noqa: E731
        stage.setup = clean  # type: ignore[attr-defined]
        stage_process.setup = clean  # type: ignore[attr-defined]
        refs = [(name, to_grey(images) if name == "lbp" else images)]
        if name == "lbp":  # both sides from the RGB store's images (grey_for_vlfeat)
            refs.append(("lbp-rgb", images))
        pools = [VlfeatPool(x, shape, cores) for _, x in refs]
        try:
            calls = [lambda _t=task, _p=p: _p.run(_t) for (task, _), p in zip(refs, pools)]
            for call in calls:
                call()  # warm-up: every worker imports its libraries
            api()
            t_api, t_stage, t_proc, *t_refs = interleaved_best(
                repeat, api, stage, stage_process, *calls
            )
            agreement = [_agreement(name, api(), call()) for call in calls]
        finally:
            for pool in pools:
                pool.close()
        for (task, _), t_ref, agree in zip(refs, t_refs, agreement):
            label = {"lbp": "lbp (VLFeat given grey)", "lbp-rgb": "lbp (both from RGB)"}
            rows.append(
                f"| {label.get(task, name)} | {n} | {n / t_api:.1f} | {n / t_stage:.1f} "
                f"({n / t_proc:.1f}) | {n / t_ref:.1f} | **{t_ref / t_api:.2f}x** | "
                f"**{t_ref / t_stage:.2f}x** ({t_ref / t_proc:.2f}x) | {agree} |"
            )
    return rows


def bench_runner(store: Path, root: Path, names: list[str], repeat: int) -> list[str]:
    images = open_store(store).array("images")[:]
    workers = os.cpu_count() or 1
    batch = 64
    rows = [
        f"Main process, {workers} threads. Extractor alone: `ext.compute` on batches of "
        f"{batch} in a pool of {workers} threads, one torch/OpenCV thread each. "
        "`extract_store`: the whole stage on the same images (read the image shards, "
        f"compute, compress, write) with {workers} Dask threads, one torch/OpenCV thread each. "
        f"Interleaved, best of {repeat} rounds; the last column times the extractor inside "
        "the stage's own run.",
        "",
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
    rows = [
        f"`extract_store` with the local Dask scheduler `threads` or `processes`, "
        f"{os.cpu_count()} workers (one torch/OpenCV thread each), interleaved, best of "
        f"{repeat} rounds (process start-up included).",
        "",
        "| feature | threads s | processes s | faster |",
        "|---|---|---|---|",
    ]
    for name in names:
        fns = []
        for sched in ("threads", "processes"):
            run = ExtractParams(runner=RunnerParams(scheduler=sched))  # type: ignore[arg-type]
            out = root / f"{name}-{sched}.zarr"

            def whole(_run: ExtractParams = run, _name: str = name, _out: Path = out) -> None:
                extract_store(_name, store, _out, run=_run)

            whole.setup = lambda _o=out: shutil.rmtree(_o, ignore_errors=True)  # type: ignore[attr-defined]
            fns.append(whole)
        t_threads, t_processes = interleaved_best(repeat, *fns)
        fast = "threads" if t_threads <= t_processes else "processes"
        rows.append(f"| {name} | {t_threads:.2f} | {t_processes:.2f} | {fast} |")
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
        f"AlexNet (caffenet, {params.weights}), {len(images)} images, all 8 layers, CPU, main "
        f"process. Bare forward: `activations()` per batch with {torch_threads()} torch "
        f"threads, or {workers} batches at once on {workers} threads of one torch thread each; "
        "`extract_stores`: the stage (read, forward, float16, compress, write; its runner: "
        f"{workers} Dask threads, one torch thread each). Interleaved, best of "
        f"{repeat} rounds.",
        "",
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


class MemmapStream:
    """The reference of the loader: a :class:`~pipeline.loader.StoreStream`'s batches,
    gathered from page-cached ``.npy`` memmaps instead of the stores (no checksums).

    Same order, same worker and rank split, same batch convention (``StoreStream._batch``),
    so it runs through the same DataLoader settings. ``gather`` is ``"numpy"`` (one fancy
    index per array) or ``"torch"`` (``torch.index_select`` into a fresh batch).
    """

    def __new__(cls, stream: Any, x_npy: Path, f_npy: Path, gather: str) -> Any:
        import warnings

        import torch
        from torch.utils.data import IterableDataset, get_worker_info

        from pipeline.loader import StoreStream

        class _Memmap(IterableDataset):  # type: ignore[type-arg]
            params = stream.params  # what make_loader reads

            def __iter__(self) -> Iterator[tuple[Any, Any]]:
                info = get_worker_info()  # as StoreStream.__iter__
                worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
                logical = (worker + stream.start_batch) % workers
                mine_done = (worker + stream.start_batch) // workers
                streams = workers * stream.world_size
                xm = np.load(x_npy, mmap_mode="r")
                fm = np.load(f_npy, mmap_mode="r")
                with warnings.catch_warnings():  # read-only maps, never written to
                    warnings.filterwarnings("ignore", message="The given NumPy array")
                    xt, ft = torch.from_numpy(xm), torch.from_numpy(fm)
                b = stream.batch_size
                pending = np.empty(0, np.int64)
                blocks = stream._samples(stream.rank * workers + logical, streams, mine_done * b)
                for _, idx in blocks:
                    pending = np.concatenate([pending, idx])
                    while len(pending) >= b:
                        rows = np.sort(pending[:b])  # the stream orders a batch by index
                        pending = pending[b:]
                        if gather == "numpy":
                            yield StoreStream._batch(xm[rows], fm[rows])
                        else:
                            r = torch.from_numpy(rows)
                            x = torch.empty((b, *xm.shape[1:]), dtype=torch.uint8)
                            f = torch.empty((b, *fm.shape[1:]), dtype=torch.float32)
                            torch.index_select(xt, 0, r, out=x)
                            torch.index_select(ft, 0, r, out=f)
                            yield f, x.permute(0, 3, 1, 2)

        return _Memmap()


def bench_loader(root: Path, store: Path, repeat: int) -> list[str]:
    """The training loader as ``invert train`` builds it, against the same batches from
    ``.npy`` memmaps through the same DataLoader settings, and against a training step."""
    import dataclasses

    import torch
    import yaml

    from pipeline.errors import StoreError
    from pipeline.loader import StoreStream, make_loader
    from pipeline.pixels import target_images
    from pipeline.shards import crc32c_of
    from pipeline.training import parse_train_section, train_step

    here = Path(__file__).resolve().parents[1]
    train = parse_train_section(yaml.safe_load((here / "params.yaml").read_text())["train"], "hog")
    feats_path = root / "hog-loader.zarr"
    extract_store("hog", store, feats_path, run=ExtractParams())
    f_arr = open_store(feats_path).array("features")[:]
    x_arr = open_store(store).array("images")[:]
    np.save(root / "f.npy", f_arr)
    np.save(root / "x.npy", x_arr)
    batch, nb = train.batch_size, 64
    pin = False  # invert train pins only for CUDA: make_loader(..., pin_memory=device is cuda)
    rows = [
        f"HOG features + 256x256 images, {len(x_arr)} samples, batches of {batch} (train.hog), "
        f"train.loader of params.yaml: {dataclasses.asdict(train.loader)}. Each contender: "
        "`make_loader(dataset, pin_memory=False)` - a DataLoader whose worker processes "
        "(one torch thread each) build the batches and hand them to the main process "
        "through shared memory, timed in the main process over "
        f"{nb} batches after a warm-up; one iterator per contender kept open across "
        f"{repeat} interleaved rounds. pin_memory: train.loader asks for it and `invert "
        "train` uses it with CUDA only (no CUDA here: the GPU check measures it).",
        "",
        "| workers | loader from the Zarr stores (every sample's crc32c checked) samples/s "
        "| memmap, numpy gather samples/s | memmap, torch gather samples/s | "
        "stores / faster memmap |",
        "|---|---|---|---|---|",
    ]
    s_store_main = None
    for workers in sorted({max(1, train.loader.workers), os.cpu_count() or 1}):
        params = dataclasses.replace(train.loader, workers=workers)
        stream = StoreStream(store, feats_path, batch_size=batch, params=params, seed=0)
        datasets = [
            stream,
            MemmapStream(stream, root / "x.npy", root / "f.npy", "numpy"),
            MemmapStream(stream, root / "x.npy", root / "f.npy", "torch"),
        ]
        # every batch of the stores equals the memmaps' (checked untimed, 2 epochs' worth)
        check = [iter(make_loader(d, pin_memory=pin)) for d in datasets]
        try:
            for _ in range(2 * len(x_arr) // batch):
                (fs, xs), *refs = [next(it) for it in check]
                for fr, xr in refs:
                    assert torch.equal(fs, fr) and torch.equal(xs, xr), "loader batches differ"
        except StoreError:  # the pipeline refuses more loader streams than blocks of reads
            rows.append(
                f"| {workers} | not measured: {len(x_arr)} images make fewer blocks of reads "
                f"than {workers} loader streams (more --images) | | | |"
            )
            continue
        finally:
            del check
        iters = [iter(make_loader(d, pin_memory=pin)) for d in datasets]

        def consume(it: Iterator[Any]) -> Callable[[], None]:
            def run() -> None:
                for _ in range(nb):
                    next(it)

            return run

        fns = [consume(it) for it in iters]
        for fn in fns:
            fn()  # warm-up: worker start, first mapping of each file
        t_store, t_np, t_torch = interleaved_best(repeat, *fns)
        del iters
        s_store, s_np, s_torch = (nb * batch / t for t in (t_store, t_np, t_torch))
        if workers == max(1, train.loader.workers):
            s_store_main = s_store
        rows.append(
            f"| {workers}{' (params.yaml)' if workers == train.loader.workers else ''} | "
            f"{s_store:.0f} | {s_np:.0f} | {s_torch:.0f} | "
            f"**{100 * s_store / max(s_np, s_torch):.0f}%** |"
        )

    xm = np.load(root / "x.npy", mmap_mode="r")
    fm = np.load(root / "f.npy", mmap_mode="r")

    def checksum_only() -> None:  # one crc32c pass over the same bytes, from memory
        for i in (np.arange(nb * batch) % len(fm)).tolist():
            crc32c_of(xm[i])
            crc32c_of(fm[i])

    with limit_threads(1):
        checksum_only()
        (t_crc,) = interleaved_best(repeat, checksum_only)

    # the consumer: a width-1.0 HOG decoder training step on this CPU, as invert train runs it
    from pipeline import decoders

    torch.manual_seed(0)
    model = decoders.build("hog", width=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    f = torch.from_numpy(f_arr[:batch])
    y = target_images(torch.from_numpy(x_arr[:batch]).permute(0, 3, 1, 2), "hog")
    step = lambda: train_step(model, opt, f, y)  # noqa: E731
    step()
    (t_step,) = interleaved_best(min(repeat, 3), step)
    s_step = batch / t_step
    assert s_store_main is not None
    rows += [
        "",
        "| what | samples/s | ratio |",
        "|---|---|---|",
        f"| crc32c of the same bytes alone, main process, 1 thread, from memory | "
        f"{nb * batch / t_crc:.0f} | |",
        f"| HOG decoder train step (`train_step`), width 1.0, batch {batch}, main process, "
        f"{torch.get_num_threads()} torch threads | {s_step:.1f} | loader "
        f"({max(1, train.loader.workers)} worker) / step = **{s_store_main / s_step:.0f}x** |",
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=256, help="images per measurement")
    parser.add_argument("--repeat", type=int, default=5, help="best of N interleaved runs")
    parser.add_argument(
        "--only",
        nargs="*",
        default=["features", "cores", "runner", "schedulers", "activations", "loader"],
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

        t0 = time.perf_counter()
        print(f"$ python benchmarks/run_all.py {' '.join(sys.argv[1:])}", flush=True)
        print(time.strftime("started %Y-%m-%d %H:%M:%S %Z"), flush=True)
        for section in args.only:
            cmd = [sys.executable, __file__, "--images", str(args.images), "--repeat"]
            cmd += [str(args.repeat), "--only", section]
            if args.features:
                cmd += ["--features", *args.features]
            subprocess.run(cmd, check=True)
        print(f"all sections: {time.perf_counter() - t0:.0f} s")
        return
    names = args.features or [n for n in ("hog", "lbp", "sift") if _available(n)]
    import logging

    logging.getLogger("pipeline").setLevel(logging.WARNING)
    print(f"machine: {machine()}")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with workdir() as root:
        store = image_store(root, args.images)
        images = open_store(store).array("images")[:]
        print(
            f"images: {len(images)} crops of scikit-image photographs, 256x256 RGB, in shards "
            f"of {shard_size()} (params.yaml prepare.shard_size, as dvc repro stores them)\n"
        )
        if "features" in args.only:
            print("## Shallow features against VLFeat, one core each\n")
            print("\n".join(bench_features(images, names, args.repeat)), "\n")
        if "cores" in args.only:
            print(
                f"## Every core: extract() and invert extract against VLFeat, "
                f"{os.cpu_count()} cores\n"
            )
            print("\n".join(bench_cores(store, root, names, args.repeat)), "\n")
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
    print("load average after: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))


def _available(name: str) -> bool:
    try:
        features.get(name)
    except (ImportError, AttributeError):
        return False
    return True


if __name__ == "__main__":
    main()
