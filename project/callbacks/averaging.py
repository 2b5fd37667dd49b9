"""An exponential moving average of the weights that is also what gets tested."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import EMAWeightAveraging


class EMAWeights(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, with evaluation after fit on the averaged weights.

    After every optimizer step (from ``update_starting_at_step`` on) the
    average moves ``1 - decay`` of the way towards the current weights.
    Validation, checkpoints and the final model use the average once it has
    started; before ``update_starting_at_step`` they use the training weights
    (Lightning's callback would validate, checkpoint and finally keep a copy of
    the random initial weights then: a run stopped early scored at chance).
    Lightning's
    callback, when a checkpoint is loaded for the test that follows fit in the
    same process, puts the raw training weights back (the checkpoint keeps them
    beside the average to resume training); the test would then score weights
    that were never validated. Here evaluation keeps the averaged weights, as
    it does when a checkpoint is tested in a new process.

    YAML (``configs/presets/ema.yaml``)::

        trainer:
          callbacks+:
            - class_path: project.callbacks.averaging.EMAWeights
              init_args:
                decay: 0.99

    Args:
        decay: Share of the average kept at each update; it averages over about
            ``1 / (1 - decay)`` updates.
        update_every_n_steps: Update after every this many optimizer steps.
        update_starting_at_step: First step that updates the average; the
            average starts as a copy of the weights at that step, so the random
            initial weights never enter it.
        update_starting_at_epoch: Also update at the end of each epoch from this
            epoch on.
        **kwargs: Passed to ``EMAWeightAveraging`` (``device``, ``use_buffers``).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
            **kwargs,
        )

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Only a resumed fit needs the raw weights back; the checkpoint's
        # state_dict, already loaded, holds the average that was validated.
        if trainer.state.fn == "fit":
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def _averaging(self) -> bool:
        """Whether the average holds an update yet (it does not before the start step)."""
        average = self._average_model
        return average is not None and int(average.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # n_averaged changes only after training batches: the same answer as at the start.
        if self._averaging():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Before the first update the checkpoint holds the training weights alone; a
        # resumed run starts the average at update_starting_at_step as this one would.
        if self._averaging():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
