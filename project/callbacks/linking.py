"""The data's facts that exist only after setup, handed to the model."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback


class LinkDataToModel(Callback):
    """Gives the model what the data knows once it is set up, before any weights are restored.

    The CLI links what the data knows at construction (classes, channels, class
    names) when it builds the model. Two facts need the split drawn first:

    - the training split's per-channel mean and std, for a model that has no
      statistics yet (none given, no pretrained weights' values); a checkpoint
      restored afterwards brings its own;
    - the training split's class counts, for class-weighted losses;
    - the size of the images, for the model's ``example_input_array``: the model
      summary then shows each layer's output shape and the FLOPs of one image.

    Lightning calls a callback's ``setup`` after the datamodule's and before
    the model's, on every process, so neither object reads the other. The CLI
    adds this callback to every run that lacks it.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if data is None or (stage == "predict" and "train" not in getattr(data, "datasets", {})):
            return
        normalize = getattr(pl_module, "normalize", None)
        statistics = getattr(data, "training_statistics", None)
        if normalize is not None and not normalize.is_set and statistics is not None:
            pl_module.set_input_statistics(*statistics())
        size, channels = getattr(data, "crop_size", None), getattr(data, "channels", None)
        if size is not None and channels is not None and pl_module.example_input_array is None:
            height, width = (size, size) if isinstance(size, int) else size
            pl_module.example_input_array = torch.zeros(
                1, channels, height, width, dtype=torch.uint8
            )
        counts = getattr(type(data), "class_counts", None)
        if stage != "predict" and counts is not None and hasattr(pl_module, "set_class_counts"):
            pl_module.set_class_counts(data.class_counts)
