"""Knowledge distillation: a student network learns from a frozen teacher's predictions."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from project.checkpoints import (
    check_import_paths,
    checkpoint_statistics,
    network_state,
    read_checkpoint,
)
from project.models.classifier import ImageClassifier
from project.models.inputs import InputNormalization


def takes_teacher_logits(loss: nn.Module) -> bool:
    """Whether ``loss`` can be called as ``loss(student_logits, targets, teacher_logits)``."""
    parameters = inspect.signature(loss.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional for p in parameters) >= 3


def rebuild_network(config: Any, path: str) -> nn.Module:
    """Builds the network a checkpoint's hyperparameters describe (``class_path``, ``init_args``).

    Only ``nn.Module`` classes under :data:`project.checkpoints.TRUSTED_PACKAGES`
    are built (the caller has checked the checkpoint), so a checkpoint cannot
    make this call any other function. Pretrained weights are not fetched: the
    checkpoint holds the trained ones.
    """
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        raise ValueError(
            f"{path} does not record how its network was built (it was not trained through "
            "`python -m project`); give model.init_args.teacher_net in the config"
        )
    module_name, _, class_name = config["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{path}: network class {config['class_path']!r} is not an nn.Module")
    init_args = dict(config.get("init_args") or {})
    if any(isinstance(v, dict) and "class_path" in v for v in init_args.values()):
        raise ValueError(
            f"{path}: the network {config['class_path']} takes nested modules; give "
            "model.init_args.teacher_net in the config"
        )
    if "weights" in init_args:
        init_args["weights"] = None
    return cls(**init_args)


class DistillationClassifier(ImageClassifier):
    """Trains ``net`` (the student) to match a frozen teacher as well as the labels.

    The teacher is a network trained with this template, loaded from one of its
    checkpoints (``weights_only=True``) and kept frozen in eval mode. Every batch
    goes through both; the loss sees ``(student_logits, targets, teacher_logits)``.
    Both take the same uint8 images; the teacher standardizes them with the
    statistics of its own training data (kept in its checkpoint), the student
    with those of this data, so each sees inputs like those it learns or
    learnt from. The teacher is not
    saved again in the student's checkpoints: it is rebuilt from
    ``teacher_checkpoint``, which must stay where it is to resume.

    Args:
        net: The student network (usually smaller than the teacher).
        num_classes: Number of classes (set from the data); the teacher must have
            been trained on the same classes.
        teacher_checkpoint: A ``.ckpt`` file written by this template.
        loss: Called as ``loss(student_logits, targets, teacher_logits)``;
            :class:`project.losses.distillation.DistillationLoss` (temperature 4, alpha 0.9) by
            default.
        optimizer: As in :class:`ImageClassifier`; only the student trains.
        scheduler: As in :class:`ImageClassifier`.
        scheduler_monitor: As in :class:`ImageClassifier`.
        class_names: Set from the data.
        teacher_net: The teacher's architecture; ``None`` rebuilds it from the
            hyperparameters saved in ``teacher_checkpoint``.
        channels: As in :class:`ImageClassifier`.
        mean: As in :class:`ImageClassifier`.
        std: As in :class:`ImageClassifier`.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        teacher_checkpoint: str,
        loss: nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        class_names: list[str] | None = None,
        teacher_net: nn.Module | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        if loss is None:
            from project.losses.distillation import DistillationLoss

            loss = DistillationLoss()
        if not takes_teacher_logits(loss):
            raise TypeError(
                f"loss {type(loss).__name__} takes (logits, targets); distillation needs a "
                "loss called as loss(student_logits, targets, teacher_logits), such as "
                "project.losses.distillation.DistillationLoss"
            )
        super().__init__(
            net,
            num_classes,
            loss,
            optimizer,
            scheduler,
            scheduler_monitor,
            class_names,
            channels=channels,
            mean=mean,
            std=std,
        )
        checkpoint = read_checkpoint(teacher_checkpoint, "teacher_checkpoint")
        saved = checkpoint.get("hyper_parameters", {})
        self._check_classes(saved, teacher_checkpoint)
        teacher = teacher_net
        if teacher is None:
            # Only the network is built from the teacher's settings.
            network = {"hyper_parameters": {"net": saved.get("net")}}
            check_import_paths(network, teacher_checkpoint, "teacher_checkpoint")
            teacher = rebuild_network(saved.get("net"), teacher_checkpoint)
        try:
            teacher.load_state_dict(network_state(checkpoint, teacher_checkpoint))
        except RuntimeError as error:
            raise ValueError(
                f"teacher_checkpoint {teacher_checkpoint} does not fit the teacher network "
                f"{type(teacher).__name__}: {error}"
            ) from error
        statistics = checkpoint_statistics(checkpoint)
        if statistics is None:
            raise ValueError(
                f"teacher_checkpoint {teacher_checkpoint} records no input statistics (mean, std)"
            )
        normalize = InputNormalization(len(statistics[0]), *statistics)
        self.teacher = nn.Sequential(normalize, teacher).requires_grad_(False).eval()

    def _check_classes(self, saved: dict[str, Any], path: str) -> None:
        classes = saved.get("class_names")
        if classes is not None and list(classes) != self.class_names:
            raise ValueError(
                f"teacher_checkpoint {path} was trained on classes {list(classes)}, the data "
                f"has {self.class_names}; distil on the classes the teacher knows "
                "(data.classes selects them)"
            )
        count = saved.get("num_classes")
        if count is not None and count != self.num_classes:
            raise ValueError(
                f"teacher_checkpoint {path} predicts {count} classes, the data has "
                f"{self.num_classes}"
            )

    def train(self, mode: bool = True) -> DistillationClassifier:
        super().train(mode)
        # The teacher's batch norm and dropout stay in inference mode.
        self.teacher.eval()
        return self

    def model_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        images, targets = batch
        logits = self(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        loss = self.loss(logits, targets, teacher_logits)
        hard = targets.argmax(dim=1) if targets.is_floating_point() else targets
        return logits, loss, hard

    # -- checkpoints: the student only -------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The teacher came from teacher_checkpoint in __init__; give the strict
        # state-dict load its entries back.
        super().on_load_checkpoint(checkpoint)
        teacher = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
        checkpoint["state_dict"].update(teacher)
