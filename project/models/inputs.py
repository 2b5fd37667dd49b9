"""The model's input contract: uint8 images in, standardized float out, statistics as buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class InputNormalization(nn.Module):
    """Scales images to [0, 1] and standardizes each channel with its mean and std.

    Takes uint8 ``(N, C, H, W)`` batches or float ones already in [0, 1] (MixUp's
    blends). ``mean`` and ``std`` (per channel, 0-1 scale) are buffers, so every
    checkpoint and exported program carries them. Until they are set (here or
    with :meth:`set`) they are NaN and ``forward`` says so.
    """

    def __init__(
        self,
        channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        unset = torch.full((1, channels, 1, 1), float("nan"))
        self.register_buffer("mean", unset.clone())
        self.register_buffer("std", unset.clone())
        # Kept as a flag: reading the buffers in forward would wait for the GPU at every step.
        self._is_set = False
        if mean is not None or std is not None:
            self.set(mean, std)

    @property
    def is_set(self) -> bool:
        return self._is_set

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._is_set = not bool(torch.isnan(self.mean).any() or torch.isnan(self.std).any())

    def set(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Sets the statistics (one value per channel, 0-1 scale)."""
        if mean is None or std is None:
            raise ValueError("give mean and std together, or neither")
        if len(mean) != self.channels or len(std) != self.channels:
            raise ValueError(
                f"mean {list(mean)} and std {list(std)} need one value per channel "
                f"({self.channels})"
            )
        if min(std) <= 0:
            raise ValueError(f"std {list(std)} must be positive")
        with torch.no_grad():
            self.mean.copy_(torch.tensor(list(mean), dtype=torch.float64).view_as(self.mean))
            self.std.copy_(torch.tensor(list(std), dtype=torch.float64).view_as(self.std))
        self._is_set = True

    def values(self) -> tuple[list[float], list[float]]:
        """The statistics as plain lists."""
        return self.mean.flatten().tolist(), self.std.flatten().tolist()

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(
                f"the model takes (N, {self.channels}, H, W) images, got shape "
                f"{tuple(images.shape)}"
            )
        if not self.is_set:
            raise ValueError(
                "the model has no input statistics: give model.init_args.mean and std, or "
                "train it through the CLI (project.callbacks.LinkDataToModel sets the "
                "training split's)"
            )
        if images.dtype == torch.uint8:
            # One float copy, scaled and standardized in place: the same floats as
            # (x / 255 - mean) / std to the bit, a third of the time of fresh tensors.
            return images.to(self.mean.dtype, copy=True).div_(255.0).sub_(self.mean).div_(self.std)
        if not images.is_floating_point():
            raise TypeError(f"the model takes uint8 or float images, got {images.dtype}")
        return (images.to(self.mean.dtype) - self.mean) / self.std

    def extra_repr(self) -> str:
        if not self.is_set:
            return f"channels={self.channels}, unset"
        mean, std = self.values()
        return f"mean={[round(m, 4) for m in mean]}, std={[round(s, 4) for s in std]}"
