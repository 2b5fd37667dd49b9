"""A grid of augmented training images with their class names, logged when fit starts."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from project.exceptions import ProjectWarning

CAPTION_HEIGHT = 14


class TrainingImageGrid(Callback):
    """Shows what the model sees: training images after augmentation, captioned with their class.

    At the start of fit, ``num_images`` training samples go through the training
    transform (and MixUp/CutMix, captioned with both classes and their weights)
    and are logged to TensorBoard under ``tag``, or saved as ``<tag>.png`` in the
    run's log directory without a TensorBoard logger.

    Args:
        tile_size: Side in pixels each image is scaled to (nearest neighbour).
        seed: Which samples are shown; their augmentation is random each run.
    """

    def __init__(
        self,
        num_images: int = 32,
        columns: int = 8,
        tile_size: int = 96,
        tag: str = "train/augmented_images",
        seed: int = 0,
    ) -> None:
        self.num_images = num_images
        self.columns = columns
        self.tile_size = tile_size
        self.tag = tag
        self.seed = seed
        self.grid: torch.Tensor | None = None
        self.captions: list[str] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "datasets", {}).get("train")
        if dataset is None or len(dataset) == 0:
            rank_zero_warn(
                "TrainingImageGrid needs an ImageDataModule with a training split",
                category=ProjectWarning,
            )
            return
        # Forked, so adding this callback leaves the run's own random draws as they were.
        with torch.random.fork_rng(devices=[]):
            images, self.captions = self._samples(datamodule, dataset)
        self.grid = self._draw(images, self.captions)
        self._log(trainer, self.grid)

    def _samples(
        self, datamodule: L.LightningDataModule, dataset: Dataset
    ) -> tuple[torch.Tensor, list[str]]:
        generator = torch.Generator().manual_seed(self.seed)
        count = min(self.num_images, len(dataset))
        chosen = torch.randperm(len(dataset), generator=generator)[:count].tolist()
        pairs = [dataset[i] for i in chosen]
        images = torch.stack([image for image, _ in pairs])
        targets = torch.tensor([target for _, target in pairs])
        names = datamodule.class_names
        mixed, soft = datamodule.mix(images.float() / 255.0, targets)
        if soft is targets:
            return images, [names[t] for t in targets.tolist()]
        captions = []
        for weights in soft:
            top = weights.topk(min(2, len(names)))
            parts = [f"{names[i]} {w:.2f}" for w, i in zip(top.values, top.indices, strict=True)]
            captions.append(" + ".join(p for p, w in zip(parts, top.values, strict=True) if w > 0))
        return (mixed * 255.0).round().clamp(0, 255).to(torch.uint8), captions

    def _draw(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """A ``(3, H, W)`` uint8 grid of the images, each above its caption."""
        tile = self.tile_size
        rows = -(-len(captions) // self.columns)
        columns = min(self.columns, len(captions))
        canvas = Image.new("RGB", (columns * tile, rows * (tile + CAPTION_HEIGHT)), "white")
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default()
        for position, (image, caption) in enumerate(zip(images, captions, strict=True)):
            image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
            scaled = F.resize(image, [tile, tile], interpolation=F.InterpolationMode.NEAREST)
            x = (position % self.columns) * tile
            y = (position // self.columns) * (tile + CAPTION_HEIGHT)
            canvas.paste(Image.fromarray(scaled.permute(1, 2, 0).numpy()), (x, y))
            draw.text((x + 2, y + tile + 1), _fit(caption, font, tile - 4), fill="black", font=font)
        return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)

    def _log(self, trainer: L.Trainer, grid: torch.Tensor) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)
                logger.experiment.add_text(f"{self.tag}/classes", ", ".join(self.captions))
                return
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        path = folder / f"{self.tag.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
        rank_zero_info(f"Augmented training images saved to {path} (no TensorBoard logger)")


def _fit(text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
