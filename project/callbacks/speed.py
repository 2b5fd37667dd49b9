"""Speed switches Lightning's Trainer has no flag for: ``torch.compile`` and channels-last."""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info


class TorchCompile(Callback):
    """Compiles the model with ``torch.compile`` when a run starts.

    The LightningModule is compiled in place (``nn.Module.compile``), so its
    class, its checkpoint keys and everything that loads them stay as they
    are; ``model = torch.compile(model)`` would rename every weight
    ``_orig_mod.*``. The first batches are slow while the graph compiles (and
    again for the last, smaller batch of an epoch unless ``dynamic``); the gain
    shows on a GPU over many steps. On a CPU, compiling takes minutes and a C++
    compiler.

    YAML (``configs/presets/compile.yaml``)::

        trainer:
          callbacks+:
            - class_path: project.callbacks.speed.TorchCompile

    Args:
        mode: ``default``; ``reduce-overhead`` (CUDA graphs: small batches);
            ``max-autotune`` (longest compile, fastest kernels).
        backend: The compiler; ``inductor`` generates kernels, ``eager`` only
            traces (to check that a model compiles, without the wait).
        dynamic: Compile for varying batch sizes instead of recompiling per shape;
            ``None`` lets PyTorch decide after the first recompilation.
        fullgraph: Fail on any graph break instead of running that part eagerly.
    """

    def __init__(
        self,
        mode: Literal["default", "reduce-overhead", "max-autotune"] = "default",
        backend: str = "inductor",
        dynamic: bool | None = None,
        fullgraph: bool = False,
    ) -> None:
        self.mode = mode
        self.backend = backend
        self.dynamic = dynamic
        self.fullgraph = fullgraph

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "_compiled_call_impl", None) is not None:
            return  # fit compiles; the test after fit reuses it
        # Only inductor takes a mode.
        mode = self.mode if self.backend == "inductor" else None
        pl_module.compile(
            backend=self.backend, mode=mode, dynamic=self.dynamic, fullgraph=self.fullgraph
        )
        rank_zero_info(f"Compiling {type(pl_module).__name__} with torch.compile ({self.backend})")


class ChannelsLast(Callback):
    """Stores the model's convolution weights in channels-last (NHWC) memory order.

    Tensor cores run convolutions in NHWC: the gain is with 16-mixed or
    bf16-mixed on a recent NVIDIA GPU (measure it with
    ``benchmarks/gpu_presets.py``). A convolution
    whose weight is channels-last returns channels-last output, so the
    activations follow from the first layer on without converting each batch.
    On a CPU the gain depends on the network and the CPU's convolution kernels:
    ``configs/experiments/fashion-mnist.yaml`` uses it because it made that
    network's training faster on a 2-core CPU (docs/benchmarks.md); time a few
    batches of yours with and without it.

    YAML (``configs/presets/channels-last.yaml``)::

        trainer:
          callbacks+:
            - class_path: project.callbacks.speed.ChannelsLast
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
