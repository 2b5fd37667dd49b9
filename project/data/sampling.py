"""The training order, drawn so that a resumed run sees what an uninterrupted run sees."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

# ResumableSampler continues a mid-epoch checkpoint at its next batch; Lightning
# cannot see that and warns that the resumed results may be unreliable.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")


# Accelerator modules of torch whose generators reseed_everything seeds when they are in use.
BUILT_IN_ACCELERATORS = ("cuda", "xpu", "mtia")


def derived_seed(seed: int, *path: int) -> int:
    """A 64-bit seed that depends only on ``seed`` and ``path`` (such as epoch and batch)."""
    sequence = np.random.SeedSequence(seed % 2**64, spawn_key=path)
    return int(sequence.generate_state(1, np.uint64)[0])


def reseed_everything(seed: int) -> None:
    """Seeds torch (CPU, accelerators in use), numpy and ``random``, where transforms draw from.

    Not ``torch.manual_seed`` for the built-in accelerators: for each one not
    initialized (CUDA, XPU, MTIA on a CPU run) it queues a seed and records the
    whole call stack, which deep in a training loop costs about 0.35 ms, once per
    batch. Here only the generators a batch can draw from are seeded (an
    accelerator not in use has no draws of that batch to repeat); a build for
    another backend (a PrivateUse1 device) still goes through ``torch.manual_seed``.
    """
    torch.default_generator.manual_seed(seed)
    for name in BUILT_IN_ACCELERATORS:
        accelerator = getattr(torch, name)
        if accelerator.is_initialized():
            accelerator.manual_seed_all(seed)
    if torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)
    build = torch.accelerator.current_accelerator()
    if build is not None and build.type not in (*BUILT_IN_ACCELERATORS, "mps"):
        torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class TrainSampler:
    """What draws the training images each epoch: subclass it and name it as ``data.sampler``.

    Called once per loader with the training images' class indices; returns a
    ``torch.utils.data.Sampler`` over their positions that draws from its
    ``generator`` attribute (as torch's random samplers do). The loader wraps it in
    :class:`ResumableSampler`, which seeds it per epoch and resumes mid-epoch.
    """

    def __call__(self, targets: list[int]) -> Sampler[int]:
        raise NotImplementedError


class ResumableSampler(DistributedSampler):
    """Shuffles by ``(seed, epoch)``; reseeds the generators per batch by ``(seed, epoch, batch)``.

    A run resumed from a checkpoint restores the weights, the optimizer and the
    loop counters, but not the random number generators, so by default it would
    draw another shuffle order, other augmentations and other dropout masks than
    the run it continues. Here each epoch's order comes from its own generator,
    and the global generators (torch, numpy, ``random``) are reseeded just before
    each batch's samples are loaded, so that batch's augmentation, MixUp/CutMix
    and dropout do not depend on what came before it. On the first epoch after a
    restart, the batches the checkpoint had already trained on are skipped.

    The result: with ``num_workers: 0`` (augmentation in the training process), a
    run resumed from an end-of-epoch or mid-epoch checkpoint ends with the same
    weights as an uninterrupted run. Loader worker processes keep their own
    generators, so with workers the resumed run's augmentations differ.

    In a distributed run every process draws the same order and takes every
    ``world_size``-th sample of it from its rank on, so each training image is
    seen once per epoch across the processes (no padding, unless a process would
    otherwise run one batch fewer than the others: then its share repeats its first
    image, since every process must run as many steps). Processes reseed by their
    rank too, and a run resumed mid-epoch skips, in each process, the batches it
    had trained on. It is a ``DistributedSampler`` so that Lightning uses it as it
    is instead of splitting it again.

    Lightning calls :meth:`set_epoch` at the start of every epoch.

    Args:
        sampler: The random sampler whose draws are made reproducible: one with a
            ``generator`` attribute, as ``RandomSampler`` and ``WeightedRandomSampler`` have.
        batch_size: Samples per batch, so batch boundaries are known.
        trainer: The trainer, to find where a restored run stands and the process's
            rank and count.
        seed: Base seed; ``None`` takes the one ``seed_everything`` set (the
            config's ``seed_everything``), or this process's initial torch seed.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        trainer: L.Trainer | None = None,
        seed: int | None = None,
    ) -> None:
        # Not DistributedSampler.__init__: it wants a dataset and a process group.
        self.sampler = sampler
        self.batch_size = batch_size
        self.trainer = trainer
        self.seed = seed
        self.epoch = 0
        self._started = False
        self.num_replicas = trainer.world_size if trainer is not None else 1
        self.rank = trainer.global_rank if trainer is not None else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        total = len(self.sampler)
        if self.num_replicas == 1:
            return total
        mine = len(range(self.rank, total, self.num_replicas))
        return max(mine, (self._batches_per_process(total) - 1) * self.batch_size + 1)

    def _batches_per_process(self, total: int) -> int:
        most = -(-total // self.num_replicas)
        return -(-most // self.batch_size)

    def _share(self, order: list[int]) -> list[int]:
        """This process's part of the epoch's ``order``; the whole order in a single process."""
        if self.num_replicas == 1:
            return order
        mine = order[self.rank :: self.num_replicas]
        while -(-len(mine) // self.batch_size) < self._batches_per_process(len(order)):
            mine.append(mine[0])
        return mine

    def __iter__(self) -> Iterator[int]:
        seed = self._base_seed()
        epoch, skip = self._start()
        self.sampler.generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
        order = self._share(list(self.sampler))
        count = -(-len(order) // self.batch_size)
        # A single process keeps the seeds it had before distributed runs drew by rank.
        rank = () if self.num_replicas == 1 else (self.rank,)
        for batch in range(skip, count):
            reseed_everything(derived_seed(seed, epoch, batch, *rank))
            yield from order[batch * self.batch_size : (batch + 1) * self.batch_size]
        # Reached when the loader asks past the last sample: what the last batch
        # draws after this (its dropout) is then the same in every run.
        reseed_everything(derived_seed(seed, epoch, count, *rank))

    def _base_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def _start(self) -> tuple[int, int]:
        """``(epoch, batches to skip)`` for this pass: where a restored run left off, once."""
        first, self._started = not self._started, True
        trainer = self.trainer
        if not first or trainer is None or not trainer.fit_loop.restarting:
            return self.epoch, 0
        # The loop state as the checkpoint stored it: Lightning moves on to the
        # next epoch only after this first pass has been requested.
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:
            return trainer.current_epoch + 1, 0
        return trainer.current_epoch, progress.current.processed


def loader_sampler(
    dataset: Any,
    train: bool,
    sampler: TrainSampler | None,
    batch_size: int,
    trainer: L.Trainer | None,
) -> Sampler[int] | None:
    """The sampler of a split's loader; ``None``: the split in order, in one process.

    Training draws through :class:`ResumableSampler` (from ``sampler``, or a plain
    shuffle). In a distributed run each process evaluates its own share of the
    validation, test or predict split, none padded, so every image counts once
    (the processes may run one batch more or fewer than each other).
    """
    if train:
        draws = sampler(dataset.targets) if sampler is not None else RandomSampler(dataset)
        return ResumableSampler(draws, batch_size, trainer)
    if trainer is not None and trainer.world_size > 1:
        return UnrepeatedDistributedSampler(dataset, trainer.world_size, trainer.global_rank, False)
    return None
