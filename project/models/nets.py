"""ConvNet, the default run's network, and the layers it shares with ``project.models.resnet``.

Networks take ``num_classes`` and ``in_channels``; the CLI fills both from the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int, batch_norm: bool) -> list[nn.Module]:
    # A bias right before batch norm is cancelled by its mean subtraction.
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm),
        *([nn.BatchNorm2d(out_channels)] if batch_norm else []),
        nn.ReLU(inplace=True),
    ]


class ConvNet(nn.Module):
    """A VGG-style CNN: stages of 3x3 convolutions, 2x2 pooling between stages.

    Average pooling to a fixed ``pooled_size`` grid before the classifier makes it
    work at any image size: a 1x1 grid (global average pooling) keeps what the
    features found, a larger grid also where, as torchvision's VGG does (7x7).

    Args:
        widths: Channels of each stage; the number of entries is the depth in stages.
        convs_per_stage: 3x3 convolutions in each stage, or one count per stage
            (``[1, 2, 2]``: one at full resolution, where a convolution costs most).
        dropout: Dropout probability before the classifier.
        pooled_size: Side of the grid the last stage's features are averaged to;
            the classifier sees ``widths[-1] * pooled_size**2`` numbers.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int | Sequence[int] = 2,
        batch_norm: bool = True,
        pooling: Literal["max", "avg"] = "max",
        dropout: float = 0.2,
        pooled_size: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        if not widths:
            raise ValueError("widths needs at least one stage")
        counts = (
            [convs_per_stage] * len(widths) if isinstance(convs_per_stage, int) else convs_per_stage
        )
        if pooled_size < 1:
            raise ValueError(f"pooled_size {pooled_size} must be at least 1 (a 1x1 grid)")
        if len(counts) != len(widths) or min(counts) < 1:
            raise ValueError(
                f"convs_per_stage {convs_per_stage} needs a count of at least 1 for each of the "
                f"{len(widths)} stages of widths {list(widths)}"
            )
        pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pooling]
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, (width, count) in enumerate(zip(widths, counts, strict=True)):
            if stage > 0:
                layers.append(pool(2))
            for _ in range(count):
                layers += conv_bn_relu(channels, width, batch_norm)
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels * pooled_size**2, num_classes)
        init_weights(self)

    def forward(self, images: Tensor) -> Tensor:
        features = self.features(images)
        if features.shape[-2:] != (self.pool.output_size,) * 2:
            # Averaging a grid to a grid of its own size changes nothing but costs a
            # pass over the features each way (about 6% of a FashionMNIST step here)
            features = self.pool(features)
        return self.classifier(self.dropout(features.flatten(1)))


def init_weights(module: nn.Module) -> None:
    """Kaiming (He) init for convolutions feeding ReLUs, unit scale for norms."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
