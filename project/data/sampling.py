"""The training order, drawn so that a resumed run sees what an uninterrupted run sees."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import Sampler

# ResumableSampler continues a mid-epoch checkpoint at its next batch; Lightning
# cannot see that and warns that the resumed results may be unreliable.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")


def derived_seed(seed: int, *path: int) -> int:
    """A 64-bit seed that depends only on ``seed`` and ``path`` (such as epoch and batch)."""
    sequence = np.random.SeedSequence(seed % 2**64, spawn_key=path)
    return int(sequence.generate_state(1, np.uint64)[0])


def reseed_everything(seed: int) -> None:
    """Seeds torch (CPU and all GPUs), numpy and ``random``, where transforms draw from."""
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


class ResumableSampler(Sampler[int]):
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
    generators, so with workers the resumed run's augmentations differ. In a
    distributed run only the per-epoch order is kept (Lightning splits it over
    the ranks); resumed mid-epoch, it draws that epoch's first batches again, as
    plain Lightning does.

    Lightning calls :meth:`set_epoch` at the start of every epoch.

    Args:
        sampler: The random sampler whose draws are made reproducible: one with a
            ``generator`` attribute, as ``RandomSampler`` and ``WeightedRandomSampler`` have.
        batch_size: Samples per batch, so batch boundaries are known.
        trainer: The trainer, to find where a restored run stands.
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
        self.sampler = sampler
        self.batch_size = batch_size
        self.trainer = trainer
        self.seed = seed
        self.epoch = 0
        self._started = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[int]:
        seed = self._base_seed()
        epoch, skip = self._start()
        self.sampler.generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
        order = list(self.sampler)
        count = -(-len(order) // self.batch_size)
        reseed = self._single_process()
        for batch in range(skip, count):
            if reseed:
                reseed_everything(derived_seed(seed, epoch, batch))
            yield from order[batch * self.batch_size : (batch + 1) * self.batch_size]
        # Reached when the loader asks past the last sample: what the last batch
        # draws after this (its dropout) is then the same in every run.
        if reseed:
            reseed_everything(derived_seed(seed, epoch, count))

    def _base_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def _single_process(self) -> bool:
        # Across the ranks of a distributed run Lightning splits this order into
        # per-rank batches, so batch boundaries here are not theirs; ranks also
        # share one seed, and reseeding them alike would repeat augmentations.
        return self.trainer is None or self.trainer.world_size == 1

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
        skip = progress.current.processed if self._single_process() else 0
        return trainer.current_epoch, skip
