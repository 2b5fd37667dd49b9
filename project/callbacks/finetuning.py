"""Staged unfreezing: train the new head first, then more and more of the pretrained network."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch.optim import Optimizer


class StagedUnfreeze(BaseFinetuning):
    """Unfreezes a :class:`~project.models.transfer.TransferClassifier`'s network stage by stage.

    Before the first milestone the model's own ``trainable`` applies (``head``
    for the classic recipe). From each milestone epoch on, the network trains
    from the named stage on, at the model's ``backbone_lr_factor`` times the
    head's learning rate. The stages become trainable inside the optimizer's
    existing groups (the model puts frozen parameters there from the start), so
    the learning-rate schedule covers them, and the state is derived from the
    epoch alone: a run resumed after a milestone trains exactly what an
    uninterrupted run would.

    Example (head for 3 epochs, then ``layer4`` too, from epoch 6 everything)::

        - class_path: project.callbacks.finetuning.StagedUnfreeze
          init_args:
            schedule: {3: layer4, 6: all}

    Args:
        schedule: Epoch (counted from 0) to the stage from which on the network
            trains from that epoch; each milestone must unfreeze at least as much
            as the one before.
    """

    def __init__(self, schedule: dict[int, str]) -> None:
        super().__init__()
        if not schedule:
            raise ValueError("StagedUnfreeze needs a schedule such as {3: layer4, 6: all}")
        epochs = [int(epoch) for epoch in schedule]
        if min(epochs) < 0:
            raise ValueError(f"schedule epochs must be >= 0, got {sorted(epochs)}")
        self.schedule = {int(epoch): stage for epoch, stage in sorted(schedule.items())}

    def stage_at(self, epoch: int, initial: str) -> str:
        """The stage the network trains from in ``epoch``."""
        stage = initial
        for milestone, name in self.schedule.items():
            if milestone <= epoch:
                stage = name
        return stage

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "set_trainable", None)):
            raise TypeError(
                f"StagedUnfreeze needs a model with stages to unfreeze "
                f"(project.models.transfer.TransferClassifier), not {type(pl_module).__name__}"
            )
        if stage == "fit" and trainer.world_size > 1:
            raise ValueError(
                "StagedUnfreeze cannot unfreeze layers in a multi-process run: DDP only "
                "synchronizes the gradients of parameters that were trainable when it wrapped "
                "the model, so unfrozen layers would drift apart between processes. Train on "
                "one device, or use the model's `trainable` without StagedUnfreeze"
            )
        self._check_order(pl_module)
        super().setup(trainer, pl_module, stage)

    def _check_order(self, pl_module: Any) -> None:
        previous, start = pl_module.trainable, pl_module.stage_start(pl_module.trainable)
        for epoch, name in self.schedule.items():
            position = pl_module.stage_start(name)
            if position > start:
                raise ValueError(
                    f"StagedUnfreeze schedule: epoch {epoch} trains from {name!r}, which "
                    f"freezes again what {previous!r} trains; list stages from the head "
                    "towards the input"
                )
            previous, start = name, position

    def freeze_before_training(self, pl_module: Any) -> None:
        pl_module.set_trainable(pl_module.trainable)

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: Optimizer) -> None:
        stage = self.stage_at(epoch, pl_module.trainable)
        if stage == pl_module.trainable_from:
            return
        # Also takes newly trainable modules out of eval mode for this epoch.
        pl_module.set_trainable(stage)
        trainable = sum(p.numel() for p in pl_module.net.parameters() if p.requires_grad)
        total = sum(p.numel() for p in pl_module.net.parameters())
        rank_zero_info(
            f"StagedUnfreeze: from epoch {epoch} the network trains from {stage!r} on "
            f"({trainable:,} of {total:,} parameters)"
        )
