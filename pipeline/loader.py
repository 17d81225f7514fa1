"""Stream (features, target image) pairs from the stores into training, never all in memory.

Order: **block shuffle**. The stores are cut into *reads* of ``read_size`` consecutive
samples (rounded up to whole chunks), put in a random order per epoch; consecutive runs of
``block_reads`` reads form a *block*; a block is read whole (a handful of sequential reads),
its usable samples (split and ``valid``) are permuted, and the stream goes on block after
block, epoch after epoch. Each DataLoader worker (and each DDP rank) takes every ``W``-th
block and opens the stores itself.

Checksums: every sample handed out is verified. The stores keep one crc32c per sample
(one sample per raw chunk), so a batch is built by copying each sample out of the mapped
shard file and checking the crc32c *of the copy* while it is still in cache — one pass
over memory, where verifying chunks first and copying after took two (40% of an
unverified memmap gather here, against 54–60% now; ``benchmarks/run_all.py --only loader``).
Rows of compressed chunks are verified and decoded whole when their block is read.

The stream is a pure function of ``(seed, rank, worker)``: a loader started at batch ``k``
produces exactly the batches an uninterrupted loader produces from ``k`` on, so a resumed run
reaches the same weights. ``DataLoader`` hands out the workers' batches round-robin, so batch
``k`` is batch ``k // W`` of worker ``k % W``; each worker skips its share without reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import collages as collage_paths
from pipeline.errors import ConfigError, StoreError
from pipeline.shards import copy_checked
from pipeline.store import CheckedArray, open_store

__all__ = ["LoaderParams", "StoreStream", "make_loader", "usable_indices"]

#: one read of a block: images and their crcs, features and theirs (see ``sample_rows``)
_Read = tuple[np.ndarray, "list[int] | None", "np.ndarray | None", "list[int] | None"]


@dataclass(frozen=True)
class LoaderParams:
    """The ``loader`` part of the ``train`` section.

    Attributes
    ----------
    workers : int
        DataLoader worker processes, each opening the stores itself (0: in the main process).
    read_size : int
        Consecutive samples read as one unit (rounded up to a whole number of chunks): the
        length of a sequential read from disk.
    block_reads : int
        Reads shuffled together as one block (the shuffle buffer is
        ``block_reads * read_size`` samples).
    prefetch : int
        Batches each worker keeps ready.
    pin_memory : bool
        Page-locked batches for faster host-to-GPU copies (only used with CUDA).
    """

    workers: int = 2
    read_size: int = 16
    block_reads: int = 8
    prefetch: int = 2
    pin_memory: bool = True

    def __post_init__(self) -> None:
        if self.workers < 0 or self.read_size < 1 or self.block_reads < 1 or self.prefetch < 1:
            raise ConfigError(
                "loader: workers >= 0, read_size >= 1, block_reads >= 1 and prefetch >= 1 needed"
            )


def usable_indices(store_path: str | Path, split: str) -> np.ndarray:
    """Sample indices of ``split`` whose image (and features) are valid.

    Parameters
    ----------
    store_path : str or Path
        An image or feature store.
    split : str
        ``"train"`` or ``"test"``.

    Returns
    -------
    (M,) ndarray of int64
    """
    store = open_store(store_path)
    splits = list(store.attrs.get("splits") or ["train", "test"])
    if split not in splits:
        raise StoreError(f"store {str(store_path)!r} has no split {split!r} (it has {splits})")
    mask = (store.array("split")[:] == splits.index(split)) & (store.array("valid")[:] > 0)
    return np.flatnonzero(mask)


def collage_samples(images_path: str | Path) -> np.ndarray:
    """Which samples of an image store are collages rather than photographs.

    Parameters
    ----------
    images_path : str or Path
        An image store (``invert prepare``); its ``paths`` name each sample's source, and a
        collage's is ``collage:SEED:NAME,...`` (:func:`pipeline.collages.collage_path`).

    Returns
    -------
    (N,) ndarray of bool
    """
    paths = open_store(images_path, kind="images").array("paths")[:]
    return np.array([collage_paths.parse_collage_path(str(p)) is not None for p in paths], bool)


class StoreStream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """An endless, seekable stream of ``(features, image)`` batches.

    Parameters
    ----------
    images_path : str or Path
        Image store (targets). Its ``images`` (N, H, W, 3) uint8 are yielded as
        (B, 3, H, W) uint8; resizing to the decoder's output happens on the device.
    features_path : str or Path or None
        Feature store with the same samples; ``None`` streams images only (online features,
        autoencoder).
    split : str
        Which samples to stream.
    batch_size : int
    params : LoaderParams
    seed : int
    start_batch : int
        Global batch index to start at (resume); earlier batches are skipped without reading.
    rank, world_size : int
        DDP rank and number of ranks: each rank streams its own blocks.
    collages : bool
        Stream the image store's collages too (:func:`collage_samples`); ``False``: its
        photographs only. The read order is the same either way (collage reads give no
        samples), so a store's photographs come in the same blocks.
    """

    def __init__(
        self,
        images_path: str | Path,
        features_path: str | Path | None,
        *,
        split: str = "train",
        batch_size: int,
        params: LoaderParams,
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        collages: bool = True,
    ) -> None:
        super().__init__()
        self.images_path = str(images_path)
        self.features_path = None if features_path is None else str(features_path)
        self.batch_size = batch_size
        self.params = params
        self.seed = seed
        self.start_batch = start_batch
        self.rank, self.world_size = rank, world_size
        ref = self.features_path or self.images_path
        store = open_store(ref)
        chunk = int(open_store(images_path).array("images").chunks[0])
        if features_path is not None:
            chunk = math.lcm(chunk, int(store.array("features").chunks[0]))
        self.unit = -(-params.read_size // chunk) * chunk  # samples per read
        self.num_samples = len(store)
        keep = np.zeros(self.num_samples, bool)
        keep[usable_indices(ref, split)] = True
        if features_path is not None:  # a sample is usable only if its image is valid too
            keep &= open_store(images_path).array("valid")[:] > 0
        if not keep.any():
            raise StoreError(f"no usable {split!r} samples in {ref!r}")
        if not collages:
            keep &= ~collage_samples(images_path)
            if not keep.any():
                raise StoreError(
                    f"the {split!r} samples of {str(images_path)!r} are all collages; train "
                    "on them (train.collages: true) or prepare photographs too"
                )
        self.keep = keep
        self.num_reads = -(-self.num_samples // self.unit)
        self.counts = np.add.reduceat(keep, np.arange(0, self.num_samples, self.unit))

    # -- the deterministic order -----------------------------------------------------------
    def _blocks(self, stream: int, streams: int) -> Iterator[tuple[int, np.ndarray]]:
        """(block id, read ids) of one stream, epoch after epoch, forever."""
        k = self.params.block_reads
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_reads)
            blocks = [order[i : i + k] for i in range(0, len(order), k)]
            mine = blocks[stream::streams]
            if not mine and epoch == 0:
                raise StoreError(
                    f"{self.num_reads} reads of {self.unit} samples make {len(blocks)} blocks, "
                    f"fewer than the {streams} loader streams; lower loader.workers, "
                    f"read_size or block_reads"
                )
            for j, reads in enumerate(mine):
                yield epoch * 1_000_003 + j, np.sort(reads)
            epoch += 1

    def _samples(
        self, stream: int, streams: int, skip: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(read ids, permuted sample indices) block after block, the first ``skip`` dropped."""
        for block, reads in self._blocks(stream, streams):
            n = int(self.counts[reads].sum())
            if skip >= n:
                skip -= n
                continue
            idx = np.concatenate(
                [
                    np.arange(r * self.unit, min((r + 1) * self.unit, self.num_samples))
                    for r in reads
                ]
            )
            idx = idx[self.keep[idx]]
            perm = np.random.default_rng([self.seed, block, stream]).permutation(len(idx))
            yield reads, idx[perm][skip:]
            skip = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # DataLoader takes batches from its workers round-robin, starting with worker 0:
        # global batch k is batch k // W of stream k % W. A loader resumed at batch s must
        # start with stream s % W, so worker w plays stream (w + s) % W, whose first
        # (w + s) // W batches were consumed before the restart.
        logical = (worker + self.start_batch) % workers
        mine_done = (worker + self.start_batch) // workers
        streams = workers * self.world_size
        stream = self.rank * workers + logical
        images = open_store(self.images_path).array("images")
        farr = None
        if self.features_path is not None:
            farr = open_store(self.features_path).array("features")
        b = self.batch_size
        pending = np.empty(0, np.int64)  # samples of the previous block not yet batched
        reads: dict[int, _Read] = {}  # the block's reads: samples to copy and check
        for block, idx in self._samples(stream, streams, mine_done * b):
            if len(idx) == 0:
                continue
            reads = {r: reads[r] for r in np.unique(pending // self.unit).tolist()}
            for r in block.tolist():
                lo, hi = r * self.unit, (r + 1) * self.unit
                x = images.sample_rows(lo, hi)
                reads[r] = (*x, *(farr.sample_rows(lo, hi) if farr is not None else (None, None)))
            pending = np.concatenate([pending, idx])
            while len(pending) >= b:
                yield self._gather(pending[:b], reads, images, farr)
                pending = pending[b:]

    def _gather(
        self,
        batch: np.ndarray,
        reads: dict[int, _Read],
        images: CheckedArray,
        farr: CheckedArray | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: each sample copied out of its shard file and its copy checked.

        The batch's samples are taken in sample order (which samples make a batch is
        random; their order inside it does not matter to a mean loss).

        Raises
        ------
        CorruptStoreError
            A sample whose copy does not match its stored crc32c (names store, array and
            chunk).
        """
        # numpy's allocations (glibc reuses freed batches) fault in no fresh pages, unlike
        # torch.empty's large aligned ones: 3x faster here
        xn = np.empty((len(batch), *images.shape[1:]), images.dtype)
        fn = None if farr is None else np.empty((len(batch), *farr.shape[1:]), farr.dtype)
        for k, i in enumerate(np.sort(batch).tolist()):
            r, j = divmod(i, self.unit)
            x, xc, f, fc = reads[r]
            if not copy_checked(xn[k], x[j], None if xc is None else xc[j]):
                raise images.corrupt_sample(i)
            if (
                fn is not None
                and f is not None
                and farr is not None
                and not copy_checked(fn[k], f[j], None if fc is None else fc[j])
            ):
                raise farr.corrupt_sample(i)
        return self._batch(xn, fn)

    @staticmethod
    def _batch(img: np.ndarray, f: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        feats = torch.empty(0) if f is None else torch.from_numpy(np.ascontiguousarray(f))
        return feats, x


def make_loader(stream: StoreStream, *, pin_memory: bool) -> DataLoader[Any]:
    """A DataLoader over a :class:`StoreStream` (batches are formed by the stream)."""
    p = stream.params
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=p.workers,
        pin_memory=pin_memory and p.pin_memory,
        prefetch_factor=p.prefetch if p.workers > 0 else None,
        persistent_workers=False,
    )
