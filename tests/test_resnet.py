"""The CIFAR-style ResNet (a leaf: project.models.resnet)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, run_cli
from torch import nn

from project.models.resnet import BasicBlock, ResNet


@pytest.mark.parametrize("size", [8, 28, 32])
def test_resnet_gives_one_logit_per_class_at_any_image_size(size: int):
    net = ResNet(num_classes=7, blocks=[1, 1], widths=[8, 16])
    assert net(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_no_resnet_convolution_has_a_bias_in_front_of_batch_norm():
    convs = [m for m in ResNet(num_classes=3).modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(conv.bias is None for conv in convs)


def test_resnet_is_sized_in_yaml_terms():
    net = ResNet(num_classes=10, blocks=[2, 2, 2, 2], widths=[64, 128, 256, 512])
    # The CIFAR ResNet-18: 11.17 M parameters, 4 stages of 2 blocks.
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    assert [len(stage) for stage in net.stages] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNet(num_classes=10, blocks=[2, 2], widths=[64])


def test_basic_block_projects_the_shortcut_only_when_shape_changes():
    same = BasicBlock(16, 16)
    assert isinstance(same.shortcut, nn.Identity)
    down = BasicBlock(16, 32, stride=2)
    assert isinstance(down.shortcut[0], nn.Conv2d) and down.shortcut[0].stride == (2, 2)
    assert down(torch.randn(1, 16, 8, 8)).shape == (1, 32, 4, 4)


def test_zero_initialised_residual_blocks_start_as_the_identity():
    block = ResNet(num_classes=2, blocks=[1], widths=[4], zero_init_residual=True).stages[0][0]
    x = torch.rand(2, 4, 5, 5)  # non-negative, as after a ReLU
    block.eval()
    assert torch.allclose(block(x), x)


@pytest.mark.slow
def test_resnet_learns_the_digits(workdir):
    cli = run_cli(
        "fit",
        "--config=configs/default.yaml",
        "--model.init_args.net=project.models.resnet.ResNet",
        "--model.init_args.net.init_args.blocks=[1, 1]",
        "--model.init_args.net.init_args.widths=[32, 64]",
        *FAST,
        "--trainer.max_epochs=4",
        "--trainer.limit_train_batches=20",
        "--trainer.limit_val_batches=1.0",
        "--trainer.limit_test_batches=1.0",
        "--trainer.callbacks=[]",
    )
    # Ten classes: chance is 0.1.
    assert cli.trainer.callback_metrics["test/acc"] > 0.6
