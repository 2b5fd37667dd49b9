"""``python -m project export``: a trained model as files that predict without the training code.

    python -m project export --config configs/default.yaml --ckpt_path best

writes, beside the checkpoint's run (``logs/<experiment>/version_N/export/``) or
into ``--output DIR``:

- ``model.pt2``: a ``torch.export`` program. It takes uint8 ``(N, C, H, W)``
  images at the evaluation size, any batch size, and returns each class's
  probability (normalization is inside, as in the trained model).
- ``model.onnx``: the same program through ``torch.onnx.export(..., dynamo=True)``,
  run once by ONNX Runtime before it is kept (``--onnx false`` skips it; it needs
  ``pip install -e ".[export]"``).
- ``model.json``: what a caller needs around the program: class names, channels,
  the input size, the evaluation resize and centre crop the data pipeline applied
  (so a new photo is prepared as the test images were), the opset, the checkpoint
  it came from and the measured parity.

Before anything is kept, both files are run on real evaluation images (the first
``--samples`` of the test split) against the checkpoint's own model in float32:
the largest difference of any probability must be at most 1e-5 for ``model.pt2``
and 1e-4 for ``model.onnx``, or the export fails with one line.
``python -m project.infer`` predicts with these files alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from project.exceptions import InputError

# The largest |p_checkpoint - p_exported| of any class probability that an export may have.
PARITY = {"pt2": 1e-5, "onnx": 1e-4}
# The largest batch the exported programs accept (their batch dimension is dynamic).
MAX_BATCH = 4096


class ExportError(InputError):
    """The exported model does not predict what the checkpoint predicts, or cannot be written."""


class ProbabilityModel(nn.Module):
    """The classifier as exported: uint8 ``(N, C, H, W)`` images in, class probabilities out."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(images).softmax(dim=1)


class ExportTrainer(L.Trainer):
    """Lightning's Trainer with one more entry point, :meth:`export`, for the CLI's subcommand."""

    def export(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        output: str | None = None,
        onnx: bool = True,
        opset: int = 18,
        samples: int = 64,
    ) -> dict[str, Any]:
        """Write the model as model.pt2, model.onnx and model.json, checked on test images.

        Args:
            model: The model the config builds; the checkpoint gives its weights.
            datamodule: The data the model was trained on: its test split gives the
                images parity is checked on, its evaluation transform the sizes.
            ckpt_path: ``best``, ``last`` (of the newest run of this config) or a file.
            output: Folder for the three files; default: ``export/`` in the
                checkpoint's run folder.
            onnx: Also write model.onnx (needs onnx, onnxscript and onnxruntime).
            opset: The ONNX opset.
            samples: Test images the parity check runs on.
        """
        if ckpt_path is None:
            raise ExportError("export: give --ckpt_path best, last or a .ckpt file")
        if datamodule is None:
            raise ExportError("export: the config names no data to check the export on")
        checkpoint = Path(ckpt_path)
        folder = Path(output) if output else checkpoint.parent.parent / "export"
        sidecar = export_model(model, datamodule, checkpoint, folder, onnx, opset, samples)
        self.state.status = TrainerStatus.FINISHED  # as after fit or test
        return sidecar


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Copies the checkpoint's weights into ``model`` once it is known to fit (weights only)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    on_load = getattr(model, "on_load_checkpoint", None)
    if on_load is not None:
        on_load(state)  # refuses another network or other classes, in one line
    model.load_state_dict(state["state_dict"])


def evaluation_images(datamodule: Any, count: int) -> Tensor:
    """The first ``count`` images of the test split after the evaluation transform, uint8."""
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    if len(test) == 0:
        raise ExportError("export: the test split is empty; parity needs evaluation images")
    return torch.stack([test[i][0] for i in range(min(count, len(test)))])


def export_model(
    model: Any,
    datamodule: Any,
    checkpoint: Path,
    folder: Path,
    onnx: bool = True,
    opset: int = 18,
    samples: int = 64,
) -> dict[str, Any]:
    """Exports ``model`` with ``checkpoint``'s weights into ``folder``; returns model.json."""
    load_weights(model, checkpoint)
    images = evaluation_images(datamodule, samples)
    wrapped = ProbabilityModel(model.to("cpu", torch.float32)).eval()
    with torch.no_grad():
        expected = wrapped(images)
    save_programs(wrapped, images, folder, onnx, opset)
    with torch.no_grad():
        exported = torch.export.load(folder / "model.pt2").module()(images)
    parity = {"pt2": _largest_difference(expected, exported, "model.pt2", folder)}
    if onnx:
        onnx_probabilities = run_onnx(folder / "model.onnx", images)
        parity["onnx"] = _largest_difference(expected, onnx_probabilities, "model.onnx", folder)
    sidecar = {
        "format": 1,
        "class_names": list(model.class_names),
        "channels": int(images.shape[1]),
        "input_size": list(images.shape[-2:]),
        # The evaluation transform: resize the shorter side, then centre-crop (None: as stored).
        "resize_size": datamodule.eval_resize_size(),
        "crop_size": datamodule.image_size,
        "input": "uint8 (N, C, H, W) at input_size, any N",
        "output": "probabilities (N, classes), in class_names order",
        "opset": opset if onnx else None,
        "checkpoint": str(checkpoint),
        "parity": {"images": len(images), **{k: float(v) for k, v in parity.items()}},
        "torch": torch.__version__,
    }
    (folder / "model.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    shown = ", ".join(f"model.{name} {value:.1e}" for name, value in parity.items())
    rank_zero_info(
        f"Exported {checkpoint} to {folder}/ (model.pt2{', model.onnx' if onnx else ''}, "
        f"model.json); largest |p_checkpoint - p_exported| on {len(images)} test images: {shown}"
    )
    return sidecar


def save_programs(
    wrapped: nn.Module, images: Tensor, folder: Path, onnx: bool = True, opset: int = 18
) -> None:
    """Writes ``wrapped`` as folder/model.pt2 (and model.onnx), traced on ``images``'s shape
    with a free batch dimension."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # Two images: a batch of one would be taken as a fixed size.
    example = (images[:2] if len(images) > 1 else images.expand(2, -1, -1, -1)).contiguous()
    program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "model.pt2")
    if onnx:
        _export_onnx(wrapped, example, batch, folder / "model.onnx", opset)


def _export_onnx(wrapped: nn.Module, example: Tensor, batch: Any, path: Path, opset: int) -> None:
    try:
        import onnxruntime  # noqa: F401  (checked before the export's minutes of work)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(
            f"export: model.onnx needs {error.name} (pip install -e '.[export]'), "
            "or give --onnx false"
        ) from None
    torch.onnx.export(
        wrapped,
        (example,),
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes=({0: batch},),
        external_data=False,  # one file; a network over 2 GB would need the weights beside it
        verbose=False,
    )


def run_onnx(path: Path, images: Tensor) -> Tensor:
    """Probabilities from ONNX Runtime on the CPU for uint8 ``images``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    return torch.from_numpy(probabilities)


def _largest_difference(expected: Tensor, exported: Tensor, name: str, folder: Path) -> float:
    difference = float((expected - exported.to(expected.dtype)).abs().max())
    bound = PARITY[name.rsplit(".", 1)[1]]
    if not difference <= bound:  # NaN fails too
        raise ExportError(
            f"export: {folder / name} differs from the checkpoint by up to {difference:.2e} "
            f"in a probability (allowed: {bound:.0e}); it is left there to inspect"
        )
    return difference
