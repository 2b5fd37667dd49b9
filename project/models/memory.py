"""Activation checkpointing: fewer activations kept for the backward pass, recomputed instead.

Training keeps every layer's output until the backward pass needs it; for deep
networks on large images those activations, not the weights, fill the memory.
A checkpointed block keeps only its input and runs its forward a second time
during backward: the peak memory of training falls, each step costs about one
more forward of those blocks (docs/training.md, "Diagnostics and memory", has
the figures). PyTorch's own wrapper does it (``use_reentrant=False``, the mode
PyTorch recommends); the state dict keeps its keys, so checkpoints load into
the same network with or without it.

One difference remains: the recomputed forward runs in training mode, so each
batch-norm layer in a checkpointed block updates its running mean and variance
twice per step (with PyTorch's momentum of 0.1, they average over a slightly
shorter window of batches). Outputs and gradients during training are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)


def checkpoint_activations(model: nn.Module, names: Sequence[str], setting: str) -> None:
    """Recomputes the activations of ``model``'s submodules ``names`` in backward.

    Args:
        model: The network; ``names`` are its module names (``stages.0``, ``layer4``).
        names: The submodules to checkpoint, typically its stages.
        setting: The config key, for the message when a name is not in ``model``.

    Raises:
        ValueError: A name that is not a submodule of ``model``, naming the ones there are.
    """
    modules = dict(model.named_modules())
    if missing := [name for name in names if name not in modules or not name]:
        children = [name for name, _ in model.named_children()]
        raise ValueError(f"{setting}: {missing} are not modules of the network; it has {children}")
    chosen = {id(modules[name]) for name in names}
    apply_activation_checkpointing(
        model,
        checkpoint_wrapper_fn=functools.partial(
            checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT
        ),
        check_fn=lambda module: id(module) in chosen,
    )
