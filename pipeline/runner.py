"""Run per-shard tasks on Dask: local threads or processes, or a ``dask.distributed`` cluster.

Every writing stage splits its output into shards (see :mod:`pipeline.store`) and runs one
task per missing shard. A task opens its inputs itself, computes, writes its whole shard and
drops a marker, so a task can run in a thread, in a local process, or on a cluster node that
shares the filesystem; the coordinator only gathers the small per-shard records.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dask

from pipeline.errors import ConfigError
from pipeline.progress import progress_bar

__all__ = ["RunnerParams", "limit_threads", "run_shards"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerParams:
    """How the shard tasks run (the ``runner`` part of a stage's params).

    Attributes
    ----------
    workers : int
        Parallel tasks on this machine; 0 means one per core.
    scheduler : {"threads", "processes"}
        Local Dask scheduler. ``processes`` sidesteps the GIL for pure-Python work;
        ``threads`` avoids pickling and start-up costs for numpy / torch / OpenCV kernels
        that release the GIL. ``benchmarks/run_all.py`` measures both per extractor.
    batch_size : int
        Images per extractor call inside a task (bounds the task's memory).
    """

    workers: int = 0
    scheduler: Literal["threads", "processes"] = "threads"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0: one per core), got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def num_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@contextlib.contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Limit torch and OpenCV intra-op threads while parallel tasks run, then restore.

    Each worker is one thread of computation; letting every worker also spawn a thread per
    core oversubscribes the machine.
    """
    import cv2
    import torch

    old_torch, old_cv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        cv2.setNumThreads(old_cv)


def _in_worker(
    fn: Callable[..., Any], index: int, kwargs: Mapping[str, Any], threads: int = 1
) -> Any:
    import cv2
    import torch

    # the worker's share of the cores (harmless where limit_threads already did it)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return fn(index, **kwargs)


def run_shards(
    fn: Callable[..., Any],
    tasks: Mapping[int, Mapping[str, Any]],
    *,
    runner: RunnerParams,
    scheduler_address: str | None = None,
    desc: str = "shards",
) -> dict[int, Any]:
    """Run ``fn(index, **tasks[index])`` for every shard index, with a progress bar.

    Parameters
    ----------
    fn : callable
        A module-level function (it must pickle for processes and clusters) that writes its
        shard and returns a small JSON-able record.
    tasks : mapping of int to mapping
        Shard index -> plain keyword arguments of its call (paths, params as dicts, the
        shard's own records); only the shards still to do.
    runner : RunnerParams
        Local parallelism.
    scheduler_address : str, optional
        Address of a running ``dask.distributed`` scheduler (``tcp://host:8786``); the tasks
        then run on its workers, which must see the same filesystem.
    desc : str
        Progress bar label.

    Returns
    -------
    dict of int to object
        Each shard's record.

    Notes
    -----
    A failing task stops the run with its exception; the shards already written stay
    written and a rerun continues from them.
    """
    shards = list(tasks)
    if not shards:
        return {}
    bar = progress_bar(total=len(shards), desc=desc, unit="shard", dynamic_ncols=True)
    try:
        if scheduler_address:
            return _run_on_cluster(fn, tasks, shards, scheduler_address, desc, bar)
        return _run_locally(fn, tasks, shards, runner, bar)
    finally:
        bar.close()


def _run_on_cluster(
    fn: Callable[..., Any],
    tasks: Mapping[int, Mapping[str, Any]],
    shards: list[int],
    scheduler_address: str,
    desc: str,
    bar: Any,
) -> dict[int, Any]:
    """:func:`run_shards` on a ``dask.distributed`` cluster; ``bar`` advances per shard."""
    from distributed import Client, as_completed

    results: dict[int, Any] = {}
    with Client(scheduler_address, timeout="30s") as client:
        futures = {
            client.submit(_in_worker, fn, i, dict(tasks[i]), key=f"{desc}-{i}-{id(fn)}"): i
            for i in shards
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    return results


def _run_locally(
    fn: Callable[..., Any],
    tasks: Mapping[int, Mapping[str, Any]],
    shards: list[int],
    runner: RunnerParams,
    bar: Any,
) -> dict[int, Any]:
    """:func:`run_shards` on the local Dask scheduler; ``bar`` advances per shard."""
    from dask.callbacks import Callback

    # each worker gets its share of the cores: 2 workers on 2 cores compute with one
    # thread each, a single worker (a network on the CPU) with both
    threads = max(1, (os.cpu_count() or 1) // runner.num_workers)

    class _Progress(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker: Any) -> None:
            name = key[0] if isinstance(key, tuple) else key
            if str(name).startswith("shard-"):
                bar.update(1)

    delayed = [
        dask.delayed(_in_worker, pure=False)(
            fn, i, dict(tasks[i]), threads, dask_key_name=f"shard-{i}"
        )
        for i in shards
    ]
    with limit_threads(threads), _Progress():
        values = dask.compute(*delayed, scheduler=runner.scheduler, num_workers=runner.num_workers)
    results = dict(zip(shards, values))
    bar.update(bar.total - bar.n)
    return results
