"""Several trained models as one network: their class probabilities averaged, for ``test`` and
``predict``."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from project.exceptions import InputFileError, InputValueError
from project.models.classifier import ImageClassifier


class Ensemble(nn.Module):
    """Averages the class probabilities of trained ``ImageClassifier`` checkpoints.

    Used as the ``net`` of an ``ImageClassifier`` (``configs/presets/ensemble.yaml``):
    each member keeps its own network and input normalization, and an image's
    probabilities are the mean of the members' softmax outputs. ``forward``
    returns their logarithm, so ``softmax`` of it (``predict``, the metrics) is the
    mean and the test loss is the cross-entropy of the averaged prediction. The
    members take images in [0, 1], which :attr:`input_preprocessing` tells the
    classifier (mean 0, std 1: it only scales uint8 images).

    Members that learned from different folds or seeds make different mistakes;
    averaging fixes some. Their test split must be unseen by all of them: the
    folds of ``python -m project.runner folds`` share one test split, and so do
    runs that vary ``seed_everything`` alone (``data.init_args.seed`` redraws the
    split). Each checkpoint is read as data
    (``ImageClassifier.load_from_checkpoint``) and must hold the data's classes.

    Args:
        checkpoints: Checkpoint files, run folders (their ``checkpoints/last.ckpt``)
            or glob patterns of either (``logs/folds-default/*-fold*``).
        num_classes: Set from the data by the CLI.
        in_channels: Set from the data by the CLI.
    """

    def __init__(self, checkpoints: list[str], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        paths = member_paths(checkpoints)
        members = [ImageClassifier.load_from_checkpoint(path, map_location="cpu") for path in paths]
        for path, member in zip(paths, members, strict=True):
            if member.num_classes != num_classes:
                raise InputValueError(
                    f"net.init_args.checkpoints: {path} was trained on {member.num_classes} "
                    f"classes {member.class_names}; the data has {num_classes}"
                )
        self.members = nn.ModuleList(members)
        self.member_paths = [str(path) for path in paths]
        self.in_channels = in_channels

    @property
    def input_preprocessing(self) -> dict[str, Any]:
        """Images in [0, 1]: each member standardizes them its own way."""
        return {"mean": [0.0] * self.in_channels, "std": [1.0] * self.in_channels}

    def forward(self, images: Tensor) -> Tensor:
        """Log of the members' mean class probabilities, ``(N, num_classes)``."""
        each = [member(images).float().softmax(dim=1) for member in self.members]
        return torch.stack(each).mean(dim=0).clamp_min(1e-12).log()


def member_paths(patterns: list[str]) -> list[Path]:
    """The checkpoint files ``patterns`` name, in sorted order; one line naming what is missing."""
    if not patterns:
        raise InputValueError("net.init_args.checkpoints is empty: name the models to average")
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise InputFileError(f"net.init_args.checkpoints: nothing matches {pattern!r}")
        for match in map(Path, matches):
            file = match / "checkpoints" / "last.ckpt" if match.is_dir() else match
            if not file.is_file():
                raise InputFileError(
                    f"net.init_args.checkpoints: {match} holds no checkpoints/last.ckpt"
                )
            paths.append(file)
    return paths
