"""Seconds per decoder training step on this machine (forward + MSE backward + Adam step).

Usage::

    python -m benchmarks.bench_decoder_step --targets hog conv5 --widths 0.25 1.0 --batch 64

Prints one line per (target, width): wall-clock and process-CPU seconds per step (median of
``--steps`` timed steps after ``--warmup`` untimed ones), the parameter count and the batch.
With ``--batch`` smaller than ``--scale-to`` it also prints the time scaled linearly to that
batch (an estimate: small batches use the cores less well). Torch's default thread count is
kept unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from pipeline.decoders import TARGETS, build, input_shape, output_size, parameter_count


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["hog", "conv5"], choices=TARGETS)
    parser.add_argument("--widths", nargs="+", type=float, default=[0.25, 1.0])
    parser.add_argument("--batch", type=int, default=64)  # docs/method.md §5: batch ~64
    parser.add_argument("--scale-to", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
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


if __name__ == "__main__":
    main()
