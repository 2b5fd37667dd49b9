"""ImageClassifier: one LightningModule for any network, loss, optimizer and scheduler."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassRecall

from project.exceptions import InputValueError
from project.models.inputs import InputNormalization
from project.models.metrics import EpochMeans, classification_metrics

if TYPE_CHECKING:
    from typing_extensions import Self

# Lightning asks for sync_dist=True on every tensor logged per epoch in a distributed
# run; the train/ and test/ ones here are reduced already (torchmetrics, EpochMeans).
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(train|test)/")

# Schedulers whose step() is meant to run after every batch, not every epoch.
PER_BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


# Training steps whose outputs go into one update of the training metrics.
TRAIN_METRIC_CHUNK = 16


def weight_decay_groups(parameters: Iterable[nn.Parameter]) -> list[dict[str, Any]]:
    """Two optimizer groups: weights, and norm weights and biases (no weight decay).

    Decay on a norm's scale or a bias only limits what the layer can express;
    it does not regularize the function.
    """
    decay, no_decay = [], []
    for parameter in parameters:
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class ImageClassifier(L.LightningModule):
    """Trains an injected network with an injected loss; logs ``train/``, ``val/``, ``test/``.

    The model owns its input contract: it takes uint8 ``(N, C, H, W)`` images at
    the size the evaluation transform produces (float images in [0, 1] too),
    scales and standardizes them itself (:class:`InputNormalization`, whose mean
    and std are in the state dict) and returns logits. A checkpoint therefore
    predicts with nothing but ``torchvision.io`` to decode its images.

    Args:
        net: Any ``nn.Module`` mapping a normalized float batch to ``(N, num_classes)`` logits.
        num_classes: Number of classes (set from the data by the CLI).
        loss: Any ``nn.Module`` called as ``loss(logits, targets)``; cross-entropy by default.
        optimizer: Built on the model's parameters; norm and bias parameters get no
            weight decay.
        scheduler: Learning-rate schedule. OneCycleLR and CyclicLR step every batch
            (OneCycleLR's ``total_steps`` is filled in from the trainer when not
            given), ReduceLROnPlateau watches ``scheduler_monitor``, others step
            every epoch.
        scheduler_monitor: Metric ReduceLROnPlateau watches (its ``mode`` must match:
            "min" for a loss).
        class_names: Names of the classes in index order (set from the data); kept
            in the checkpoint and used for predictions.
        channels: Channels of the input images (set from the data); ``None``: the
            network's ``in_channels``, or 3.
        mean: Per-channel mean of the inputs on the 0-1 scale. ``None``: the
            pretrained weights' value (a network's ``input_preprocessing``), or the
            training split's, which :class:`project.callbacks.LinkDataToModel` sets
            before training.
        std: Per-channel standard deviation, likewise.
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
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Built outside the CLI, net and loss would be stored as pickled modules
        # (the weights are in the state dict anyway) and the optimizer and
        # scheduler as pickled classes, which a weights_only load refuses.
        for name in [k for k, v in self.hparams.items() if isinstance(v, nn.Module) or callable(v)]:
            del self.hparams[name]
            # The logger writes hparams_initial to hparams.yaml: a module's repr there
            # is the whole network as text.
            self._hparams_initial.pop(name, None)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"{len(class_names)} class names {class_names} for num_classes={num_classes}"
            )
        if channels is None:
            channels = getattr(net, "in_channels", 3)
        if mean is None and std is None:
            pretrained = getattr(net, "input_preprocessing", None) or {}
            mean, std = pretrained.get("mean"), pretrained.get("std")
        self.normalize = InputNormalization(channels, mean, std)
        self.net = net
        self.num_classes = num_classes
        self.loss = loss if loss is not None else nn.CrossEntropyLoss()
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        # The training metrics see targets the loss has just accepted, so they
        # skip the checks (one GPU wait per update); see also _update_train_metrics.
        self.train_metrics = classification_metrics(num_classes, "train/", validate_args=False)
        self._train_outputs: list[tuple[Tensor, Tensor]] = []
        self.epoch_means = EpochMeans()  # train/loss_epoch over every process's samples
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # Per-class recall shows the classes a good average hides.
        self.test_class_recall = MulticlassRecall(num_classes, average=None)

    def forward(self, images: Tensor) -> Tensor:
        """Logits of uint8 images (or float ones in [0, 1]), ``(N, C, H, W)``."""
        return self.net(self.normalize(images))

    @property
    def input_preprocessing(self) -> dict[str, Any] | None:
        """What the network's pretrained weights expect; ``None`` if nothing.

        A dict with ``mean`` and ``std`` (per channel, 0-1 scale), ``resize_size``
        and ``crop_size`` (pixels; ``None`` keeps the data's own size) and
        ``channels``. The CLI gives the sizes to the data where the user set none.
        """
        return getattr(self.net, "input_preprocessing", None)

    def set_input_statistics(self, mean: list[float], std: list[float]) -> None:
        """Sets the mean and std the model standardizes its inputs with (0-1 scale)."""
        self.normalize.set(mean, std)

    def set_class_counts(self, counts: list[int]) -> None:
        """Gives class-weighted losses (``weight: inverse_frequency``) the training counts."""
        set_class_counts = getattr(self.loss, "set_class_counts", None)
        if set_class_counts is not None:
            set_class_counts(counts)

    def model_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, loss and hard targets of one batch; shared by every stage."""
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits, targets)
        # Soft targets (MixUp, CutMix) are scored against their largest class.
        hard = targets.argmax(dim=1) if targets.is_floating_point() else targets
        return logits, loss, hard

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        logits, loss, targets = self.model_step(batch)
        self._train_outputs.append((logits.detach(), targets))
        if len(self._train_outputs) >= TRAIN_METRIC_CHUNK:
            self._update_train_metrics()
        self.log("train/loss_step", loss, prog_bar=True, batch_size=len(targets))
        # A loss made of named terms (WeightedSum, DistillationLoss) shows each one.
        terms = {f"loss/{k}": v for k, v in getattr(self.loss, "last_terms", {}).items()}
        for name, value in terms.items():
            self.log(f"train/{name}_step", value)
        self.epoch_means.add({"loss": loss, **terms}, len(targets))
        return loss

    def _update_train_metrics(self) -> None:
        """Feeds the held training outputs to the metrics in one update.

        The metrics only sum counts, so one update of ``TRAIN_METRIC_CHUNK``
        batches gives the same epoch values as one update per batch, for a
        fraction of the per-call cost (which shows on small networks).
        """
        if not self._train_outputs:
            return
        logits, targets = zip(*self._train_outputs, strict=True)
        self._train_outputs.clear()
        self.train_metrics.update(torch.cat(logits), torch.cat(targets))

    def on_train_epoch_end(self) -> None:
        # Logged once per epoch rather than from every step: each log call walks
        # Lightning's result collection, a cost that shows on small models.
        self._update_train_metrics()
        self.log_dict(self.train_metrics.compute())
        # Reduced across processes in this hook, which every process runs (see EpochMeans).
        for name, mean in self.epoch_means.compute(
            self.trainer.strategy.reduce, self.device
        ).items():
            self.log(f"train/{name}_epoch", mean, prog_bar=name == "loss")

    def on_train_start(self) -> None:
        # The sanity check ran validation batches into these metrics.
        self.val_metrics.reset()
        self.val_loss.reset()
        self._check_schedule_length()

    def _check_schedule_length(self) -> None:
        """A resumed one-cycle schedule cannot stretch to a longer run; say so up front."""
        needed = self.trainer.estimated_stepping_batches
        for config in self.trainer.lr_scheduler_configs:
            total = getattr(config.scheduler, "total_steps", None)
            if isinstance(config.scheduler, PER_BATCH_SCHEDULERS) and total and total < needed:
                raise InputValueError(
                    f"{type(config.scheduler).__name__} was built for {total} optimizer steps "
                    f"(restored from the checkpoint), but this run needs {needed}: resume with "
                    "the max_epochs the run started with, or start a new run from the "
                    "checkpoint's weights (TransferClassifier's init_from)"
                )

    def on_train_epoch_start(self) -> None:
        # Each epoch counts from zero, also after one that ended early (an
        # exception, a stop mid-epoch) and left outputs or counts behind.
        self._train_outputs.clear()
        self.train_metrics.reset()
        self.epoch_means.reset()
        # Loss weights that follow a schedule over epochs (WeightedSum).
        set_epoch = getattr(self.loss, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.current_epoch)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        logits = self._evaluate(batch, self.test_metrics, self.test_loss)
        self.test_class_recall.update(logits, batch[1])
        return logits  # for callbacks' on_test_batch_end (evaluation reports)

    def on_validation_epoch_end(self) -> None:
        # The metric objects are logged once, here: Lightning computes them (synced
        # across processes by torchmetrics) and resets them. Logged from every step
        # instead, each of the five costs a log call per batch.
        self.log_dict(self.val_metrics, prog_bar=True)
        self.log("val/loss", self.val_loss, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics)
        self.log("test/loss", self.test_loss)
        recall = self.test_class_recall.compute()
        self.test_class_recall.reset()
        self.log("test/recall_min", recall.min(), sync_dist=False)
        for name, value in zip(self.class_names, recall, strict=True):
            self.log(f"test/recall/{name}", value, sync_dist=False)

    def _evaluate(
        self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, loss_mean: MeanMetric
    ) -> Tensor:
        logits, loss, targets = self.model_step(batch)
        metrics.update(logits, targets)
        # A metric, not self.log(sync_dist=True): processes that evaluate different
        # numbers of images (an odd split) still give the mean over every image.
        loss_mean.update(loss.detach(), len(targets))
        return logits

    def predict_step(self, batch: tuple[Tensor, list[str]], batch_idx: int) -> dict[str, Any]:
        images, paths = batch
        return {"paths": list(paths), "probabilities": self(images).softmax(dim=1)}

    # -- checkpoints -------------------------------------------------------------------

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path | IO[bytes],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Self:
        """Lightning's loader, refusing checkpoints that name untrusted code.

        The network, loss, optimizer and scheduler are rebuilt from the class
        paths saved in the checkpoint, so each must be under
        :data:`project.checkpoints.TRUSTED_PACKAGES` (add your package there to
        load its models) unless ``kwargs`` or ``hparams_file`` replace it. The
        file is read with ``weights_only=True``. Errors are one line naming the
        file (:class:`project.checkpoints.CheckpointError`).
        """
        from project.checkpoints import load_checked

        return load_checked(
            cls,
            super().load_from_checkpoint,
            checkpoint_path,
            hparams_file,
            kwargs,
            map_location=map_location,
            strict=strict,
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint made for other classes or another network, naming both sides.

        Runs before the weights are copied, so ``test``, ``predict`` and a resumed
        ``fit`` stop with this message instead of a list of tensor size mismatches.
        """
        from project.models.compat import check_fits  # loaded only when a checkpoint is

        source = getattr(self._trainer, "ckpt_path", None) or "the checkpoint"
        check_fits(self, checkpoint, source)
        if "normalize.mean" not in checkpoint["state_dict"]:
            raise ValueError(
                f"{source} holds no input statistics (normalize.mean, normalize.std): it was "
                "written before the model carried them; train it again"
            )

    # -- optimization ------------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters split so that norm weights and biases get no weight decay."""
        return weight_decay_groups(p for p in self.parameters() if p.requires_grad)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameter_groups())
        if self.scheduler is None:
            return optimizer
        scheduler = self._build_scheduler(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, PER_BATCH_SCHEDULERS):
            config["interval"] = "step"
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = self.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        given = getattr(self.scheduler, "keywords", {})
        accepts = (
            "total_steps" in given or "total_steps" in inspect.signature(self.scheduler).parameters
        )
        if accepts and given.get("total_steps") is None and given.get("epochs") is None:
            # OneCycleLR needs the run's length: the trainer knows it (epochs,
            # batches, accumulation and devices included).
            return self.scheduler(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return self.scheduler(optimizer)
