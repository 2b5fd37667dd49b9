"""A ResNet of BasicBlocks for small images, trained from scratch (not on the default path)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from project.models.nets import conv_bn_relu, init_weights


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or projection) shortcut.

    When the block changes the width or the resolution, the shortcut is a 1x1
    convolution with the same stride followed by batch norm (a projection), so
    the two branches can be added.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of BasicBlocks for small images (32x32 CIFAR, 28x28 MNIST, 8x8 digits).

    Unlike the ImageNet ResNet (7x7 stride-2 stem and max pooling, which shrink a
    32 px image to 8 px before the first block), the stem here is one 3x3
    convolution at full resolution; each stage after the first halves the
    resolution. ``blocks: [2, 2, 2, 2]`` with ``widths: [64, 128, 256, 512]`` is
    the CIFAR ResNet-18 (11 M parameters); the defaults are a lighter ResNet-14.

    Args:
        num_classes: Output logits (set from the data).
        in_channels: Image channels (set from the data).
        blocks: BasicBlocks in each stage; the number of entries is the number of stages.
        widths: Channels of each stage, one entry per stage.
        dropout: Dropout probability before the classifier.
        zero_init_residual: Start each block's last batch-norm scale at zero, so
            every block begins as the identity (Goyal et al., 2017): steadier early
            training of deep ResNets with large batches; slower on short runs.
        activation_checkpointing: Recompute each stage's activations in backward
            instead of keeping them (:mod:`project.models.memory`): less memory,
            slower steps.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        blocks: Sequence[int] = (2, 2, 2),
        widths: Sequence[int] = (64, 128, 256),
        dropout: float = 0.0,
        zero_init_residual: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        if not blocks or len(blocks) != len(widths):
            raise ValueError(
                f"blocks {list(blocks)} and widths {list(widths)} need one entry per stage, "
                "and at least one stage"
            )
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, widths[0], batch_norm=True))
        stages: list[nn.Module] = []
        channels = widths[0]
        for stage, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            layers = []
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)
        if zero_init_residual:
            for block in self.modules():
                if isinstance(block, BasicBlock):
                    nn.init.zeros_(block.bn2.weight)
        if activation_checkpointing:
            from project.models.memory import checkpoint_activations

            stages = [f"stages.{index}" for index in range(len(self.stages))]
            checkpoint_activations(self, stages, "activation_checkpointing")

    def forward(self, images: Tensor) -> Tensor:
        features = self.pool(self.stages(self.stem(images))).flatten(1)
        return self.fc(self.dropout(features))
