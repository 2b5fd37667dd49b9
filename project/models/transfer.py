"""Transfer learning: fine-tune a pretrained network, whole or in part, at its own rate."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from project.checkpoints import checkpoint_statistics, network_state, read_checkpoint
from project.models.backbones import find_head
from project.models.classifier import ImageClassifier, weight_decay_groups

ALL = "all"
HEAD = "head"
# Learning-rate entries of an optimizer group that schedulers set or read.
LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def frozen(module: nn.Module) -> bool:
    """True for a module that has parameters and none of them trains."""
    flags = [p.requires_grad for p in module.parameters()]
    return bool(flags) and not any(flags)


class TransferClassifier(ImageClassifier):
    """Fine-tunes a pretrained network: which part trains, and at what learning rate.

    The network's head (its last linear layer, see
    :func:`~project.models.backbones.find_head`) always trains at the optimizer's
    learning rate; the rest, the backbone, trains at ``backbone_lr_factor`` times
    that rate, from the stage named by ``trainable`` on. Modules whose parameters
    are all frozen run in eval mode, so a frozen backbone's batch-norm layers keep
    their pretrained statistics and its dropout is off. Norm weights and biases get
    no weight decay. For staged unfreezing add
    :class:`~project.callbacks.finetuning.StagedUnfreeze` to the trainer's callbacks.

    Args:
        net: The network, usually a :class:`~project.models.backbones.TorchvisionNet` with
            pretrained weights; any network of this template works.
        num_classes: Number of classes (set from the data).
        loss: As in :class:`ImageClassifier`.
        optimizer: Its learning rate is the head's.
        scheduler: As in :class:`ImageClassifier`; the backbone's learning rate
            follows the same schedule, scaled by ``backbone_lr_factor``.
        scheduler_monitor: As in :class:`ImageClassifier`.
        class_names: Set from the data.
        trainable: ``all`` (full fine-tuning), ``head`` (feature extraction: only
            the new head trains), or a stage name such as ``layer4`` (ResNet) or
            ``features.6`` (EfficientNet, MobileNet): that stage, every later one and
            the head train, earlier ones are frozen. Stage names are module names of
            ``net.body`` for a TorchvisionNet, of ``net`` otherwise.
        backbone_lr_factor: Backbone learning rate as a factor of the head's: 0.1
            to 0.01 is usual for ImageNet weights on photos; nearer 1 when the new
            task needs different features (1 trains everything alike).
        init_from: A checkpoint of this template (``logs/.../*.ckpt``) whose network
            weights start ``net``, which must have the same architecture. The head is
            taken too only when the checkpoint was trained on the same class names.
            The model keeps the checkpoint's input statistics (the features were
            learnt on inputs normalized that way) unless ``mean`` and ``std`` are given.
        channels: As in :class:`ImageClassifier`.
        mean: As in :class:`ImageClassifier`.
        std: As in :class:`ImageClassifier`.

    Speed switches work as for any model: stack ``configs/presets/channels-last.yaml``
    (:class:`~project.callbacks.speed.ChannelsLast`) or ``configs/presets/compile.yaml``
    (:class:`~project.callbacks.speed.TorchCompile`).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        loss: nn.Module | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_monitor: str = "val/loss",
        class_names: list[str] | None = None,
        trainable: str = ALL,
        backbone_lr_factor: float = 0.1,
        init_from: str | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
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
        if backbone_lr_factor < 0:
            raise ValueError(f"backbone_lr_factor must be >= 0, got {backbone_lr_factor}")
        self.head_name, _ = find_head(net)
        self.backbone_lr_factor = backbone_lr_factor
        self.trainable = trainable
        self.trainable_from = trainable
        if init_from is not None:
            self._init_from(init_from, keep_statistics=mean is not None)
        self.set_trainable(trainable)

    # -- which parameters train --------------------------------------------------------

    def _stage_root(self) -> tuple[str, nn.Module]:
        body = getattr(self.net, "body", None)
        return ("body.", body) if isinstance(body, nn.Module) else ("", self.net)

    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The network's parameters other than the head's, in order, named from the stage root."""
        prefix, _ = self._stage_root()
        head = f"{self.head_name}."
        return [
            (name.removeprefix(prefix), parameter)
            for name, parameter in self.net.named_parameters()
            if not name.startswith(head)
        ]

    def stage_names(self) -> list[str]:
        """Names ``trainable`` accepts besides ``all`` and ``head``: modules of up to two levels."""
        _, root = self._stage_root()
        backbone = {id(parameter) for _, parameter in self.backbone_parameters()}
        return [
            name
            for name, module in root.named_modules()
            if name and name.count(".") <= 1 and any(id(p) in backbone for p in module.parameters())
        ]

    def stage_start(self, stage: str) -> int:
        """Index, in :meth:`backbone_parameters`, of the first parameter of ``stage``."""
        backbone = self.backbone_parameters()
        if stage == ALL:
            return 0
        prefix, _ = self._stage_root()
        if stage == HEAD or stage == self.head_name.removeprefix(prefix):
            return len(backbone)
        for index, (name, _) in enumerate(backbone):
            if name == stage or name.startswith(f"{stage}."):
                return index
        raise ValueError(
            f"trainable: {stage!r} is not a stage of {type(self.net).__name__}; use 'all', "
            f"'head' or one of {self.stage_names()}"
        )

    def set_trainable(self, stage: str) -> None:
        """Trains the head and the backbone from ``stage`` on; freezes the rest."""
        start = self.stage_start(stage)
        for index, (_, parameter) in enumerate(self.backbone_parameters()):
            parameter.requires_grad_(index >= start)
        for parameter in self.net.get_submodule(self.head_name).parameters():
            parameter.requires_grad_(True)
        self.trainable_from = stage
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferClassifier:
        super().train(mode)
        if mode:
            # A frozen part must not drift: batch norm would otherwise update its
            # statistics from these batches, and dropout would add noise.
            for module in self.net.modules():
                if frozen(module):
                    module.eval()
        return self

    # -- starting from a checkpoint ----------------------------------------------------

    def _init_from(self, path: str, keep_statistics: bool) -> None:
        checkpoint = read_checkpoint(path, "init_from")
        state = network_state(checkpoint, path)
        own = self.net.state_dict()
        saved_classes = checkpoint.get("hyper_parameters", {}).get("class_names")
        head = f"{self.head_name}."
        if saved_classes != self.class_names:
            state = {k: v for k, v in state.items() if not k.startswith(head)}
        expected = [k for k in own if saved_classes == self.class_names or not k.startswith(head)]
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in own]
        reshaped = [k for k in state if k in own and state[k].shape != own[k].shape]
        if missing or unexpected or reshaped:
            raise ValueError(
                f"init_from: the network in {path} is not a {type(self.net).__name__} like "
                f"net: missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes "
                f"{reshaped[:4]}; give net the architecture the checkpoint was trained with"
            )
        self.net.load_state_dict(state, strict=False)
        statistics = checkpoint_statistics(checkpoint)
        if statistics is not None and not keep_statistics:
            self.set_input_statistics(*statistics)

    # -- optimization ------------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Head (and any other trainable module) at the optimizer's rate, backbone scaled.

        Frozen backbone parameters are in the optimizer too: they have no
        gradient, so the optimizer skips them, and when
        :class:`~project.callbacks.finetuning.StagedUnfreeze` lets them train they already
        have their group, learning rate and schedule.
        """
        backbone = [parameter for _, parameter in self.backbone_parameters()]
        in_backbone = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in in_backbone]
        groups = weight_decay_groups(rest)
        for group in weight_decay_groups(backbone):
            groups.append({**group, "lr_scale": self.backbone_lr_factor})
        return groups

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        scheduler = config["lr_scheduler"]["scheduler"] if isinstance(config, dict) else None
        scale_learning_rates(optimizer, scheduler)
        return config


def scale_learning_rates(optimizer: torch.optim.Optimizer, scheduler: Any | None) -> None:
    """Multiplies each group's learning rates by its ``lr_scale``, in the optimizer and scheduler.

    Done after the scheduler is built because OneCycleLR and CyclicLR set every
    group's rate from one ``max_lr``/``base_lr``; scaling the group's entries and
    the scheduler's per-group bases keeps the ratio through the whole schedule.
    """
    for index, group in enumerate(optimizer.param_groups):
        factor = group.get("lr_scale", 1.0)
        if factor == 1.0:
            continue
        for key in LR_KEYS:
            if key in group:
                group[key] = group[key] * factor
        for attribute in ("base_lrs", "max_lrs"):
            values = getattr(scheduler, attribute, None)
            if isinstance(values, list) and index < len(values):
                values[index] = values[index] * factor
