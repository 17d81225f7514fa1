"""Seconds per decoder training step on this machine (forward + MSE backward + Adam step).

Usage::

    python -m benchmarks.bench_decoder_step --targets hog conv5 --widths 0.25 1.0 --batch 64

Prints one line per (target, width): wall-clock and process-CPU seconds per step (median of
``--steps`` timed steps after ``--warmup`` untimed ones), the parameter count and the batch.
With ``--batch`` smaller than ``--scale-to`` it also prints the time scaled linearly to that
batch (an estimate: small batches use the cores less well). Torch's default thread count is
kept unless ``--threads`` is given.

``--deepsim`` also times a DeePSiM step (``train.loss: deepsim``: decoder step with pixel,
comparator-feature and adversarial terms, then a discriminator step; no pausing) at the
same target, width and batch, with the default ``train.deepsim`` weights and a CaffeNet
comparator of random weights (the same cost as trained ones), and prints its ratio to the
pixel step measured in the same run::

    python -m benchmarks.bench_decoder_step --targets hog conv5 --widths 0.25 --batch 16 \
        --deepsim
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from pipeline import alexnet
from pipeline.decoders import TARGETS, build, input_shape, output_size, parameter_count
from pipeline.deepsim import Alternation, Comparator, DeepSimParams, Discriminator
from pipeline.deepsim_training import Adversary, deepsim_step


def time_steps(
    target: str, width: float, batch: int, steps: int, warmup: int
) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one Adam training step of the ``target`` decoder."""
    torch.manual_seed(0)
    model = build(target, width=width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))  # docs/method.md §5
    s = output_size(target)
    x = torch.randn(batch, *input_shape(target))  # (B, *features)
    y = torch.rand(batch, 3, s, s)  # (B, 3, S, S) target image
    walls, cpus = [], []
    for i in range(warmup + steps):
        w0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def time_deepsim_steps(
    target: str, width: float, batch: int, steps: int, warmup: int, layer: str = "conv5"
) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one DeePSiM step (:func:`deepsim_step`) of ``target``."""
    torch.manual_seed(0)
    model = build(target, width=width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999))
    params = DeepSimParams(loss="deepsim", comparator_layer=layer)
    comparator = Comparator(alexnet.build("caffenet", weights="random:0"), layer, "caffenet")
    disc = Discriminator(math.prod(input_shape(target)), width=width).train()
    disc_opt = torch.optim.Adam(disc.parameters(), lr=params.disc_lr, betas=params.disc_betas)
    # a ratio of 1e-9: neither side ever pauses, so every step does the full work
    adversary = Adversary(params, comparator, disc, disc_opt, Alternation(ratio=1e-9))
    s = output_size(target)
    x = torch.randn(batch, *input_shape(target))  # (B, *features)
    y = torch.rand(batch, 3, s, s) - 0.5  # (B, 3, S, S) target image
    walls, cpus = [], []
    for i in range(warmup + steps):
        w0, c0 = time.perf_counter(), time.process_time()
        deepsim_step(model, opt, adversary, x, y)
        if i >= warmup:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["hog", "conv5"], choices=TARGETS)
    parser.add_argument("--widths", nargs="+", type=float, default=[0.25, 1.0])
    parser.add_argument("--batch", type=int, default=64)  # docs/method.md §5: batch ~64
    parser.add_argument("--scale-to", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--deepsim", action="store_true", help="also time a DeePSiM step")
    parser.add_argument("--comparator-layer", default="conv5", choices=alexnet.LAYERS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    for target in args.targets:
        for width in args.widths:
            wall, cpu = time_steps(target, width, args.batch, args.steps, args.warmup)
            line = (
                f"{target:6s} width {width:<5g} params {parameter_count(target, width):>11,d}  "
                f"wall {wall:7.3f} s/step  cpu {cpu:7.3f} s/step"
            )
            if args.batch < args.scale_to:
                line += f"  ~{wall * args.scale_to / args.batch:.2f} s/step at {args.scale_to}"
            print(line, flush=True)
            if args.deepsim:
                d_wall, d_cpu = time_deepsim_steps(
                    target, width, args.batch, args.steps, args.warmup, args.comparator_layer
                )
                print(
                    f"{target:6s} width {width:<5g} deepsim ({args.comparator_layer} comparator)"
                    f"  wall {d_wall:7.3f} s/step  cpu {d_cpu:7.3f} s/step  "
                    f"ratio to pixel: wall {d_wall / wall:.2f}x  cpu {d_cpu / cpu:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
