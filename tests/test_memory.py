"""Activation checkpointing (project/models/memory.py): the same network, recomputed in backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from project.models.backbones import TorchvisionNet
from project.models.resnet import ResNet

WRAPPED = "._checkpoint_wrapped_module"  # in parameter names, not in the state dict


def tensors_kept_for_backward(net: nn.Module, images: torch.Tensor) -> int:
    """How many tensors the forward pass stores for the backward pass (outside checkpoints)."""
    kept = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept[0] += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        net(images)
    return kept[0]


def same_training_step(plain: nn.Module, checkpointed: nn.Module, images: torch.Tensor) -> None:
    """Both give the same logits and the same gradients for every parameter."""
    checkpointed.load_state_dict(plain.state_dict())  # the keys are the same
    outputs = [net(images) for net in (plain, checkpointed)]
    torch.testing.assert_close(outputs[0], outputs[1])
    for output in outputs:
        output.square().mean().backward()
    grads = [
        {
            name.replace("._checkpoint_wrapped_module", ""): p.grad
            for name, p in net.named_parameters()
        }
        for net in (plain, checkpointed)
    ]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_a_checkpointed_resnet_recomputes_its_stages_and_learns_the_same():
    torch.manual_seed(0)
    plain = ResNet(num_classes=5, in_channels=3, blocks=[1, 1], widths=[8, 16])
    checkpointed = ResNet(
        num_classes=5, blocks=[1, 1], widths=[8, 16], activation_checkpointing=True
    )
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
    images = torch.randn(4, 3, 16, 16)
    kept = [tensors_kept_for_backward(net, images) for net in (plain, checkpointed)]
    assert kept[1] < kept[0] / 2, f"kept {kept[1]} tensors, {kept[0]} without checkpoints"
    same_training_step(plain, checkpointed, images)


def test_torchvision_stages_are_checkpointed_by_their_module_names():
    torch.manual_seed(0)
    plain = TorchvisionNet("resnet18", num_classes=3)
    chosen = ["layer1", "layer4"]
    checkpointed = TorchvisionNet("resnet18", num_classes=3, activation_checkpointing=chosen)
    images = torch.randn(2, 3, 64, 64)
    kept = [tensors_kept_for_backward(net, images) for net in (plain, checkpointed)]
    assert kept[1] < kept[0], f"kept {kept[1]} tensors, {kept[0]} without checkpoints"
    same_training_step(plain, checkpointed, images)
    assert not hasattr(checkpointed.body.layer2, "_checkpoint_wrapped_module")


def test_a_name_that_is_not_a_module_is_named_with_the_ones_there_are():
    with pytest.raises(ValueError, match=r"\['layer9'\] are not modules of the network; it has"):
        TorchvisionNet("resnet18", num_classes=3, activation_checkpointing=["layer9"])
