"""The GPU check: every CUDA path of the pipeline, timed and compared, in one run.

Run it through ``scripts/gpu_check.sh OUT_DIR [--dry-run]``, which installs carried wheels
where they are needed and writes the log; this module writes ``OUT_DIR/gpu_check.json``.

Parts (each one runs even when an earlier one failed; the JSON says which failed and why):

``pytest``
    ``python -m pytest -m gpu``: a bf16 training step against the CPU step, AlexNet and HOG
    against the CPU, a checkpoint moved between devices (``tests/test_gpu.py``).
``train_step``
    Seconds per decoder training step (:func:`pipeline.training.train_step`, bf16 autocast,
    channels_last, as ``invert train`` runs it) for HOG and CONV5 at width 1.0, batch 64;
    the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
    (forward and backward of convolutions, transposed convolutions and matrix products;
    Adam and elementwise work not counted), the model FLOP utilisation against the GPU's
    dense bf16 peak, and the same step with ``cudnn.benchmark`` on.
``alexnet``
    ``extract_stores`` of all 8 AlexNet layers on the GPU (read, forward, float16, compress,
    write) against the bare extractor (:func:`pipeline.alexnet.activations.activations`) on
    the same batches in the same run, and the forward alone on device-resident batches.
``loader``
    The training loader exactly as ``invert train`` builds it (``make_loader`` over
    :class:`~pipeline.loader.StoreStream`, ``train.loader`` of ``params.yaml``, pinned
    memory, batches copied to the GPU) in samples/s, against the samples/s the HOG step
    above consumes.
``torchrun``
    ``torchrun --standalone --nproc_per_node 1 -m stages train hog ...``: a few steps
    through the process group (NCCL on a GPU) and DistributedDataParallel, with the pixel
    loss and again with ``--loss deepsim`` (the discriminator synchronised across ranks).

``--dry-run`` runs every part on the CPU at toy size (``INVERT_GPU_TESTS_ON_CPU=1`` for the
tests): what CI checks (``tests/test_gpu_check.py``). Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: dense bf16 tensor-core peaks (FLOP/s) by a part of the device name; --peak-tflops overrides
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the real check, or the dry run's toy sizes."""

    images: int = 512
    width: float = 1.0
    batch: int = 64
    warmup: int = 5
    steps: int = 20
    loader_batches: int = 64
    rounds: int = 3
    loader_workers: tuple[int, ...] = (4, 8)  # besides params.yaml's
    loader_block_reads: int | None = None  # None: params.yaml's
    torchrun_steps: int = 8
    torchrun_width: float = 0.25


TOY = Sizes(
    images=16,
    width=0.125,
    batch=2,
    warmup=0,
    steps=1,
    loader_batches=8,
    rounds=1,
    loader_workers=(2,),
    loader_block_reads=1,  # 24 samples make 2 reads of 16: one block per worker
    torchrun_steps=2,
    torchrun_width=0.125,
)


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- pytest -------------------------------------------------------------------------------
def part_pytest(env: dict[str, str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    result = _run(cmd, env, timeout)
    summary = next((line.strip("= ") for line in reversed(result["tail"]) if " in " in line), None)
    if result["rc"] != 0:
        raise RuntimeError(f"pytest -m gpu exited {result['rc']}: {summary}")
    if summary is None or "passed" not in summary or "skipped" in summary:
        raise RuntimeError(f"pytest -m gpu ran no test or skipped some: {summary}")
    return {"command": " ".join(cmd[1:]), "summary": summary}


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``cmd`` with its output streamed into this log; rc and its lines."""
    import threading

    log("$ " + " ".join(cmd))
    lines: list[str] = []
    with subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            watchdog.cancel()
    if rc < 0:
        raise TimeoutError(f"{' '.join(cmd[:4])} killed after {timeout:.0f} s")
    return {"rc": rc, "tail": lines[-40:], "lines": lines}


# -- decoder training step ----------------------------------------------------------------
def _step_setup(target: str, sizes: Sizes, device: Any) -> tuple[Any, ...]:
    import torch

    from pipeline import decoders
    from pipeline.pixels import target_images

    torch.manual_seed(0)
    model = decoders.build(target, width=sizes.width).to(device)
    if device.type == "cuda":  # as train() does
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    feats = torch.relu(torch.randn(sizes.batch, *decoders.input_shape(target), device=device))
    images = torch.randint(0, 256, (sizes.batch, 3, 256, 256), dtype=torch.uint8, device=device)
    return model, opt, feats, target_images(images, target)


def _autocast(device: Any) -> contextlib.AbstractContextManager[Any]:
    import torch

    # train() autocasts on CUDA only; the dry run times the CPU's float32 step
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _time_steps(target: str, sizes: Sizes, device: Any) -> float:
    """Median seconds of one ``train_step`` (after ``sizes.warmup`` untimed steps)."""
    from pipeline.training import train_step

    model, opt, feats, y = _step_setup(target, sizes, device)
    times = []
    for i in range(sizes.warmup + sizes.steps):
        _sync(device)
        t0 = time.perf_counter()
        train_step(model, opt, feats, y, autocast=_autocast(device))  # .item(): synchronises
        if i >= sizes.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _step_flops(target: str, sizes: Sizes, device: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.training import train_step

    model, opt, feats, y = _step_setup(target, sizes, device)
    with FlopCounterMode(display=False) as counter:
        train_step(model, opt, feats, y, autocast=_autocast(device))
    return int(counter.get_total_flops())


def part_train_step(sizes: Sizes, device: Any, peak: float | None) -> dict[str, Any]:
    import torch

    from pipeline import decoders

    out: dict[str, Any] = {
        "what": (
            "pipeline.training.train_step in the main process: forward, float32 MSE, "
            "backward, Adam; bf16 autocast and channels_last on CUDA (as invert train); "
            "random features and target images already on the device; median of "
            f"{sizes.steps} steps after {sizes.warmup}"
        ),
        "flops_counted": (
            "torch.utils.flop_counter.FlopCounterMode over one step: forward + backward of "
            "conv, conv-transpose and matmul (2 FLOPs a multiply-add); Adam, MSE and "
            "elementwise work not counted"
        ),
        "peak_flops": peak,
    }
    for target in ("hog", "conv5"):
        flops = _step_flops(target, sizes, device)
        seconds = _time_steps(target, sizes, device)
        row: dict[str, Any] = {
            "width": sizes.width,
            "batch": sizes.batch,
            "dtype": "bf16 autocast" if device.type == "cuda" else "float32",
            "parameters": decoders.parameter_count(target, sizes.width),
            "flops_per_step": flops,
            "step_s": seconds,
            "samples_per_s": sizes.batch / seconds,
            "achieved_tflops": flops / seconds / 1e12,
            "mfu": None if peak is None else flops / seconds / peak,
        }
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            try:
                fast = _time_steps(target, sizes, device)
            finally:
                torch.backends.cudnn.benchmark = False
            row["step_s_cudnn_benchmark"] = fast
            row["mfu_cudnn_benchmark"] = None if peak is None else flops / fast / peak
        log(f"train_step {target}: {json.dumps(row)}")
        out[target] = row
    return out


# -- DeePSiM: comparator and discriminator on the device ------------------------------------
def _time_deepsim(target: str, sizes: Sizes, device: Any) -> tuple[float, dict[str, float]]:
    """Median seconds of one ``deepsim_step`` (comparator conv5 with random CaffeNet weights,
    discriminator of the decoder's width), and the last step's losses."""
    import torch

    from pipeline import decoders
    from pipeline.alexnet.activations import AlexNetParams
    from pipeline.deepsim import DeepSimParams
    from pipeline.deepsim_training import build_adversary, deepsim_step

    model, opt, feats, y = _step_setup(target, sizes, device)
    adversary = build_adversary(
        DeepSimParams(loss="deepsim", lambda_feat=1e-8),
        AlexNetParams(weights="random:0"),
        feature_size=int(torch.tensor(decoders.input_shape(target)).prod()),
        width=sizes.width,
        seed=0,
        device=device,
    )
    times, last = [], None
    for i in range(sizes.warmup + sizes.steps):
        _sync(device)
        t0 = time.perf_counter()
        last = deepsim_step(model, opt, adversary, feats, y, autocast=_autocast(device))
        _sync(device)
        if i >= sizes.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    assert last is not None
    losses = {k: float(v) for k, v in vars(last).items() if isinstance(v, (int, float))}
    return times[len(times) // 2], losses


def part_deepsim(sizes: Sizes, device: Any, step: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "what": (
            "pipeline.deepsim_training.deepsim_step in the main process: the decoder's pixel + "
            "AlexNet conv5 feature + adversarial loss (comparator frozen, one forward over "
            "reconstruction and target), then one discriminator Adam step; bf16 autocast and "
            "channels_last on CUDA as invert train --loss deepsim; median of "
            f"{sizes.steps} steps after {sizes.warmup}; ratio to the pixel train_step of the "
            "train_step part"
        ),
    }
    for target in ("hog", "conv5"):
        seconds, losses = _time_deepsim(target, sizes, device)
        pixel = (step or {}).get(target, {}).get("step_s")
        row = {
            "width": sizes.width,
            "batch": sizes.batch,
            "step_s": seconds,
            "samples_per_s": sizes.batch / seconds,
            "pixel_step_s": pixel,
            "ratio_to_pixel": None if not pixel else seconds / pixel,
            "losses": losses,
        }
        log(f"deepsim_step {target}: {json.dumps(row)}")
        out[target] = row
    return out


# -- AlexNet extraction -------------------------------------------------------------------
def part_alexnet(store: Path, root: Path, sizes: Sizes, device: Any) -> dict[str, Any]:
    import torch

    from pipeline import alexnet
    from pipeline.alexnet import LAYERS
    from pipeline.alexnet.activations import AlexNetParams, _network, activations
    from pipeline.extract import ExtractParams, extract_stores
    from pipeline.runner import RunnerParams
    from pipeline.store import open_store

    images = open_store(store).array("images")[:]
    params = AlexNetParams()  # random:0, float16: the embedded default
    batch = 64
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    dev = str(device)
    activations(images[:2], params, list(LAYERS), dev, dtype=params.dtype)  # build, warm up

    def bare() -> None:
        for x in batches:
            activations(x, params, list(LAYERS), dev, dtype=params.dtype)

    net = _network(params.arch, params.weights, dev)
    resident = [alexnet.preprocess(x, params.arch).to(device) for x in batches]

    def forward_only() -> None:
        with torch.inference_mode():
            for x in resident:
                net.forward_layers(x, list(LAYERS))
        _sync(device)

    run = ExtractParams(device=dev, runner=RunnerParams(batch_size=batch))
    outs = {name: root / "act" / f"{name}.zarr" for name in LAYERS}

    def whole() -> None:
        extract_stores(list(LAYERS), store, outs, params=params, run=run)

    def clean() -> None:
        shutil.rmtree(root / "act", ignore_errors=True)

    contenders = {"extract_stores": (whole, clean), "activations": (bare, None)}
    contenders["forward"] = (forward_only, None)
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(sizes.rounds):  # interleaved rounds, best of each
        for key, (fn, setup) in contenders.items():
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    n = len(images)
    return {
        "what": (
            f"{n} images, all 8 layers, batches of {batch}, {params.weights}, stored "
            f"{params.dtype}; extract_stores on {dev} (its runner: one task thread with "
            f"{os.cpu_count()} torch threads); activations(): the extractor alone "
            "(preprocess on the CPU, copy in, forward, float16, copy out); forward: "
            "net.forward_layers on device-resident batches; best of "
            f"{sizes.rounds} interleaved rounds"
        ),
        "images_per_s": {k: n / v for k, v in best.items()},
        "best_seconds": best,
        "overhead_vs_activations": best["extract_stores"] / best["activations"] - 1,
        "overhead_vs_forward": best["extract_stores"] / best["forward"] - 1,
    }


# -- the loader ---------------------------------------------------------------------------
def part_loader(
    store: Path, feats: Path, sizes: Sizes, device: Any, step: dict[str, Any] | None
) -> dict[str, Any]:
    import yaml

    from pipeline.loader import StoreStream, make_loader
    from pipeline.training import parse_train_section

    section = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    params = parse_train_section(section, "hog")
    pin = device.type == "cuda"
    rows = {}
    base = params.loader
    if sizes.loader_block_reads is not None:
        base = replace(base, block_reads=sizes.loader_block_reads)
    for workers in sorted({max(1, base.workers), *sizes.loader_workers}):
        lp = replace(base, workers=workers)
        stream = StoreStream(store, feats, batch_size=sizes.batch, params=lp, seed=0)
        loader = make_loader(stream, pin_memory=pin)  # what train() builds
        batches = iter(loader)
        for _ in range(2 * workers):  # worker start-up and first reads, untimed
            next(batches)
        t0 = time.perf_counter()
        for _ in range(sizes.loader_batches):
            f, x = next(batches)
            f = f.to(device, non_blocking=True)
            x = x.to(device, non_blocking=True)
        _sync(device)
        seconds = time.perf_counter() - t0
        del batches, loader
        rows[str(workers)] = sizes.loader_batches * sizes.batch / seconds
        log(f"loader, {workers} workers: {rows[str(workers)]:.0f} samples/s")
    consumption = None if step is None else step["hog"]["samples_per_s"]
    return {
        "what": (
            "make_loader(StoreStream(images, hog features)) as invert train builds it: "
            f"train.loader of params.yaml (read_size {lp.read_size}, block_reads "
            f"{lp.block_reads}, prefetch {lp.prefetch}) with the worker counts below, "
            f"pin_memory={pin}, every sample's crc32c checked, batches of {sizes.batch} "
            f"copied to {device}; {sizes.loader_batches} batches after a warm-up"
        ),
        "params_yaml_loader": params.loader.__dict__,
        "samples_per_s_by_workers": rows,
        "hog_step_samples_per_s": consumption,
        "loader_over_step": (
            None if consumption is None else {k: v / consumption for k, v in rows.items()}
        ),
    }


# -- torchrun -----------------------------------------------------------------------------
def part_torchrun(
    store: Path, feats: Path, root: Path, sizes: Sizes, device: Any, env: dict[str, str]
) -> dict[str, Any]:
    import yaml

    params = {
        "train": {
            "width": sizes.torchrun_width,
            "steps": sizes.torchrun_steps,
            "batch_size": sizes.batch,
            "checkpoint_every": sizes.torchrun_steps,
            "eval_batches": 1,
            "device": "cuda" if device.type == "cuda" else "cpu",
            "loader": {"workers": 1, "block_reads": 2},
        }
    }
    (root / "torchrun.yaml").write_text(yaml.safe_dump(params))
    pixel = _torchrun_train(store, feats, root, "pixel", device, env)
    # the DeePSiM step under DDP: the discriminator's all-reduced gradients, the pausing
    # rule's averaged losses (pipeline.deepsim_training), on NCCL
    return {**pixel, "deepsim": _torchrun_train(store, feats, root, "deepsim", device, env)}


def _torchrun_train(
    store: Path, feats: Path, root: Path, loss: str, device: Any, env: dict[str, str]
) -> dict[str, Any]:
    metrics = root / f"torchrun-{loss}-metrics.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
        "-m", "stages", "train", "hog", "--images", str(store), "--features", str(feats),
        "--out", str(root / f"torchrun-{loss}-out"), "--checkpoints", str(root / "torchrun-ckpt"),
        "--params", str(root / "torchrun.yaml"), "--metrics", str(metrics), "--loss", loss,
    ]  # fmt: skip
    result = _run(cmd, {**env, "NCCL_DEBUG": "INFO"}, 240)
    if result["rc"] != 0:
        raise RuntimeError(f"torchrun ({loss} loss) exited {result['rc']}")
    text = "\n".join(result["lines"])
    rate = re.search(r"train hog: (\d+) steps in ([\d.]+) s \(([\d.]+) samples/s on (\S+)\)", text)
    got = json.loads(metrics.read_text())
    backend = "nccl" if "NCCL INFO" in text else ("gloo" if device.type != "cuda" else None)
    if device.type == "cuda" and backend != "nccl":
        raise RuntimeError(f"torchrun ({loss} loss) trained, but NCCL said nothing")
    return {
        "command": " ".join(cmd[1:]),
        "steps": got["steps"],
        "train_loss": got["train_loss"],
        "backend": backend,
        "samples_per_s": None if rate is None else float(rate.group(3)),
        "device": None if rate is None else rate.group(4),
    }


# -- the whole check ----------------------------------------------------------------------
def _stores(root: Path, sizes: Sizes) -> tuple[Path, Path]:
    from pipeline.extract import ExtractParams, extract_store
    from pipeline.images import PrepareParams, prepare

    shard = 64 if sizes.images >= 64 else 16
    params = PrepareParams(train_samples=sizes.images, test_samples=8, test_photos=("coffee",))
    store = prepare("sample", root / "images.zarr", replace(params, shard_size=shard))
    feats = extract_store("hog", store, root / "hog.zarr", run=ExtractParams())
    return store, feats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    parser.add_argument("--dry-run", action="store_true", help="the CPU, toy sizes")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak")
    parser.add_argument(
        "--only",
        nargs="*",
        default=["pytest", "train_step", "deepsim", "alexnet", "loader", "torchrun"],
    )
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    import torch

    sizes = TOY if args.dry_run else Sizes()
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    peak = None
    if args.peak_tflops:
        peak = args.peak_tflops * 1e12
    elif cuda:
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    if args.dry_run:
        env["INVERT_GPU_TESTS_ON_CPU"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run stays on the CPU even on a GPU machine
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "device": str(device),
        "device_name": name,
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sizes": sizes.__dict__,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "parts": {},
        "failed": [],
    }
    if not cuda and not args.dry_run:
        log("no CUDA device: nothing to check (use --dry-run to run every part on the CPU)")
        report["failed"].append("no CUDA device")
        _write(args.out, report, t_start)
        return 2
    log(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, sizes {sizes}")

    def part(key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if key not in args.only:
            return None
        log(f"== {key}")
        t0 = time.perf_counter()
        try:
            value = fn()
            report["parts"][key] = {"ok": True, "seconds": time.perf_counter() - t0, **value}
        except Exception as err:  # every part runs; the JSON says which failed and why
            traceback.print_exc()
            report["parts"][key] = {"ok": False, "seconds": time.perf_counter() - t0}
            report["parts"][key]["error"] = f"{type(err).__name__}: {err}"
            report["failed"].append(key)
            value = None
        _write(args.out, report, t_start)  # a part killed later leaves the earlier ones
        return value

    with _workdir() as root:
        part("pytest", lambda: part_pytest(env, 300))
        stores: dict[str, Path] = {}

        def need_stores() -> tuple[Path, Path]:
            if not stores:
                stores["images"], stores["hog"] = _stores(root, sizes)
            return stores["images"], stores["hog"]

        step = part("train_step", lambda: part_train_step(sizes, device, peak))
        part("deepsim", lambda: part_deepsim(sizes, device, step))
        part("alexnet", lambda: part_alexnet(need_stores()[0], root, sizes, device))
        part("loader", lambda: part_loader(*need_stores(), sizes, device, step))
        part("torchrun", lambda: part_torchrun(*need_stores(), root, sizes, device, env))
    _write(args.out, report, t_start)
    log(f"done in {time.perf_counter() - t_start:.0f} s; failed: {report['failed'] or 'none'}")
    return 1 if report["failed"] else 0


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="invert-gpu-check-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write(out: Path, report: dict[str, Any], t_start: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["seconds"] = time.perf_counter() - t_start
    tmp = out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / "gpu_check.json")


if __name__ == "__main__":
    sys.exit(main())
