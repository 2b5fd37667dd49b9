"""Torchvision classification models as plain networks: pretrained weights, a head for your classes.

``TorchvisionNet`` is injected as ``net`` like any network of this template, so
the CLI's links (``num_classes``, ``in_channels``) work unchanged. Its weights
come from torchvision by name (cached in ``$TORCH_HOME/hub/checkpoints/``) or
from a local file, and the preprocessing the weights expect is exposed as
``input_preprocessing`` for the data pipeline.
"""

from __future__ import annotations

import difflib
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum, get_model, get_model_weights, list_models


def find_head(net: nn.Module) -> tuple[str, nn.Module]:
    """The layer that outputs the class logits: the last ``nn.Linear`` registered in ``net``.

    Torchvision's squeezenet ends in a 1x1 convolution instead; a network with
    no linear layer at all gets its last ``nn.Conv2d``. Returns its name within
    ``net`` and the module.
    """
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not layers:
        layers = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise ValueError(
            f"{type(net).__name__} has no nn.Linear or nn.Conv2d layer to use as the "
            "classifier head"
        )
    return layers[-1]


def new_head(old: nn.Module, num_classes: int, dropout: float | None) -> nn.Module:
    """A freshly initialised layer like ``old`` (same input size) with ``num_classes`` outputs."""
    if isinstance(old, nn.Linear):
        layer: nn.Module = nn.Linear(old.in_features, num_classes)
    else:
        layer = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    return layer if dropout is None else nn.Sequential(nn.Dropout(dropout), layer)


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (or would download) the file of ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Makes every ``torch.load`` in the block refuse pickled code (``weights_only=True``).

    Torchvision's builders load their weight files with ``weights_only=False``;
    this PyTorch switch makes those loads safe without re-implementing each
    builder's own loading (renamed keys, model-specific arguments).
    """
    name = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def preprocessing_of(weights: WeightsEnum, channels: int) -> dict[str, Any]:
    """The ``input_preprocessing`` dict of ``weights`` (its ``transforms()``) for ``channels``.

    For a network adapted to one channel the RGB statistics are averaged.
    """
    transforms = weights.transforms()
    mean, std = list(transforms.mean), list(transforms.std)
    if channels != len(mean):
        mean = [sum(mean) / len(mean)] * channels
        std = [sum(std) / len(std)] * channels
    return {
        "mean": mean,
        "std": std,
        "resize_size": int(transforms.resize_size[0]),
        "crop_size": int(transforms.crop_size[0]),
        "channels": channels,
    }


class TorchvisionNet(nn.Module):
    """Any torchvision classification model, pretrained or not, with a head for your classes.

    The model's own classifier layer (``fc``, ``classifier[-1]``, ``heads.head``,
    ...) is replaced by a new one with ``num_classes`` outputs. The model itself
    is ``self.body``; stage names for partial fine-tuning (``layer4``,
    ``features.6``) are its module names.

    Args:
        name: A torchvision classification model: ``resnet18``, ``resnet50``,
            ``efficientnet_b0``, ``mobilenet_v3_large``, ``convnext_tiny``,
            ``vit_b_16``, ... (``torchvision.models.list_models()`` lists all 80).
        num_classes: Output logits (set from the data).
        in_channels: Image channels (set from the data). Pretrained weights expect
            3; for 1 (grayscale) the first convolution's pretrained filters are
            summed over R, G and B, which is what the network computes on a gray
            image repeated into three channels.
        weights: ``None`` starts from random weights. A torchvision weights name for
            this model, e.g. ``DEFAULT`` (the best available), ``IMAGENET1K_V1``,
            ``IMAGENET1K_V2``: the file is read from ``$TORCH_HOME/hub/checkpoints/``
            (default ``~/.cache/torch``) and downloaded there when missing. Or a
            path to a file with the model's state dict (``torch.save(model.state_dict())``).
            Files are loaded with ``weights_only=True`` (no pickled code runs).
        dropout: Dropout probability before the new head; ``None`` keeps the
            model's own head structure (several already have dropout: EfficientNet,
            MobileNet, VGG).
        model_kwargs: Extra arguments for torchvision's builder, e.g.
            ``{"aux_logits": false}`` for ``inception_v3``.
        activation_checkpointing: Module names of the model whose activations are
            recomputed in backward instead of kept (:mod:`project.models.memory`),
            typically its stages: ``[layer1, layer2, layer3, layer4]`` for a ResNet,
            ``[features.1, ..., features.7]`` for an EfficientNet. Less memory,
            slower steps.
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        in_channels: int = 3,
        weights: str | None = None,
        dropout: float | None = None,
        model_kwargs: dict[str, Any] | None = None,
        activation_checkpointing: list[str] | None = None,
    ) -> None:
        super().__init__()
        check_model_name(name)
        self.name = name
        kwargs = dict(model_kwargs or {})
        self.weights_enum: WeightsEnum | None = None
        if weights is None:
            body = get_model(name, num_classes=num_classes, **kwargs)
            if dropout is not None:
                head_name, head = find_head(body)
                body.set_submodule(head_name, new_head(head, num_classes, dropout))
        else:
            body = self._pretrained(name, weights, kwargs)
            head_name, head = find_head(body)
            body.set_submodule(head_name, new_head(head, num_classes, dropout))
        self.body = body
        self.in_channels = in_channels
        if in_channels != 3:
            adapt_first_conv(body, in_channels, name)
        if activation_checkpointing:
            from project.models.memory import checkpoint_activations

            setting = "net.init_args.activation_checkpointing"
            checkpoint_activations(body, activation_checkpointing, setting)

    def _pretrained(self, name: str, weights: str, kwargs: dict[str, Any]) -> nn.Module:
        path = Path(weights).expanduser()
        if path.suffix in (".pth", ".pt", ".bin", ".ckpt") or path.is_file():
            self.weights_enum = known_weights_for_file(name, path)
            return load_local_weights(name, path, kwargs)
        self.weights_enum = resolve_weights(name, weights)
        file = cached_weights_path(self.weights_enum)
        try:
            with weights_only_loads():
                return get_model(name, weights=self.weights_enum, **kwargs)
        except (OSError, RuntimeError, pickle.UnpicklingError) as error:
            if file.is_file():
                raise RuntimeError(
                    f"{file} (the cached {name} weights {self.weights_enum}) could not be "
                    f"loaded: {error}. Delete it to download it again, or replace it with "
                    f"the file from {self.weights_enum.url}"
                ) from error
            raise FileNotFoundError(
                f"could not download the {name} weights {self.weights_enum} ({error}). "
                f"Offline, fetch {self.weights_enum.url} on a machine with network access "
                f"and place it at {file} (the folder $TORCH_HOME/hub/checkpoints/; "
                f"TORCH_HOME={os.environ.get('TORCH_HOME', 'unset, so ~/.cache/torch')}), "
                "or pass the file's path as weights"
            ) from error

    @property
    def input_preprocessing(self) -> dict[str, Any] | None:
        """Mean, std (0-1 scale), resize and crop size the weights were trained with.

        ``None`` for random weights or a local file that is not one of
        torchvision's: the data then uses its own statistics.
        """
        if self.weights_enum is None:
            return None
        return preprocessing_of(self.weights_enum, self.in_channels)

    def forward(self, images: Tensor) -> Tensor:
        out = self.body(images)
        # Inception and GoogLeNet return (logits, auxiliary logits...) in training.
        return out[0] if isinstance(out, tuple) else out


def check_model_name(name: str) -> None:
    available = list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"{name!r} is not a torchvision classification model{hint} "
            "(torchvision.models.list_models() lists them)"
        )


def resolve_weights(name: str, weights: str) -> WeightsEnum:
    """``DEFAULT``, ``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V2`` to the enum member."""
    enum = get_model_weights(name)
    member = weights.rsplit(".", 1)[-1]
    if member not in enum.__members__:
        raise ValueError(
            f"{weights!r} names no weights of {name} and no existing file; "
            f"choose one of {list(enum.__members__)} or give a path to a weights file"
        )
    return enum[member]


def known_weights_for_file(name: str, path: Path) -> WeightsEnum | None:
    """The torchvision weights whose download has this file name, if any (for their metadata)."""
    for weights in get_model_weights(name):
        if cached_weights_path(weights).name == path.name:
            return weights
    return None


def load_local_weights(name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """Builds ``name`` and loads the state dict in ``path`` into all but its head."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"weights file {path} holds more than tensors and was not loaded (only plain "
            f"state dicts load safely): {error}"
        ) from error
    if isinstance(state, dict) and "state_dict" in state:
        raise ValueError(
            f"{path} is a Lightning checkpoint, not a state dict of {name}; start from it "
            "with TransferClassifier's init_from"
        )
    body = get_model(name, **kwargs)
    head_name, _ = find_head(body)
    # The file's head may have any class count: it is replaced anyway.
    state = {k: v for k, v in state.items() if not k.startswith(f"{head_name}.")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(f"{head_name}.")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not hold {name} weights: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} ({len(missing)} and {len(unexpected)} keys)"
        )
    return body


def adapt_first_conv(body: nn.Module, in_channels: int, name: str) -> None:
    """Replaces the first 3-channel convolution with one taking ``in_channels``.

    For one channel the filters are summed over RGB; otherwise they are
    repeated over the channels and scaled by ``3 / in_channels`` so activations
    keep their size.
    """
    conv_name, conv = next(
        ((n, m) for n, m in body.named_modules() if isinstance(m, nn.Conv2d)), ("", None)
    )
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{name} has no 3-channel first convolution to adapt to {in_channels}")
    if getattr(body, "transform_input", False):
        raise ValueError(
            f"{name} with these weights re-normalizes 3 RGB channels inside the model; "
            "use data.channels: 3"
        )
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        else:
            repeats = -(-in_channels // 3)
            weight = conv.weight.repeat(1, repeats, 1, 1)[:, :in_channels]
            new.weight.copy_(weight * (3 / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    body.set_submodule(conv_name, new)
