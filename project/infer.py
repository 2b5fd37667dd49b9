"""Predict with an exported model alone: no Lightning, no training code, no config.

    python -m project.infer logs/default/version_0/export/model.pt2 photos/ --output predictions.csv
    python -m project.infer logs/default/version_0/export/model.onnx a.png b.jpg

``model.json`` (written beside the model by ``python -m project export``) gives
the class names, the channels and the evaluation resize and centre crop; each
image is decoded and prepared as the test images were in training
(:mod:`project.images`). ``.pt2`` files run on torch; ``.onnx`` files on ONNX
Runtime. The CSV has the columns of ``python -m project predict``'s
``predictions.csv``: ``path``, ``predicted``, ``probability``, then one per class.
Files that cannot be used (not an image, truncated, another size where the
model takes one fixed size) are listed on standard error and left out; the
exit status is 1 when no image could be used.

Imports only torch, torchvision, numpy and Pillow (and onnxruntime for ``.onnx``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from project.images import (
    UnreadableImageError,
    eval_transforms,
    load_image,
    prediction_header,
    prediction_row,
    scan_folder,
)

Predictor = Callable[[torch.Tensor], torch.Tensor]


# Constants that torch.export.load unpickles: custom objects and opaque objects.
PICKLED_CONSTANTS = ("custom_obj", "opaque_obj")


def read_sidecar(model: Path) -> dict[str, Any]:
    """``model.json`` beside ``model``: what the export wrote about its inputs and classes."""
    path = model.with_name("model.json")
    try:
        sidecar = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(
            f"error: {path} is missing; export the model with python -m project export"
        ) from None
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {path} is not valid JSON ({error})") from None
    missing = {"class_names", "channels", "input_size"} - sidecar.keys()
    if missing:
        raise SystemExit(f"error: {path} lacks {sorted(missing)}; export the model again")
    return sidecar


def load_predictor(model: Path) -> Predictor:
    """A function from a uint8 ``(N, C, H, W)`` batch to probabilities (``.pt2`` or ``.onnx``)."""
    if not model.is_file():
        raise SystemExit(f"error: {model} does not exist")
    if model.suffix == ".pt2":
        check_program_archive(model)
        try:
            program = torch.export.load(model).module()
        except Exception as error:  # a damaged program: one line, whatever torch raises
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise SystemExit(
                f"error: {model} does not load: {reason or type(error).__name__}"
            ) from None

        def run_program(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return program(images)

        return run_program
    if model.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError:
            raise SystemExit(
                "error: .onnx models need onnxruntime (pip install -e '.[export]')"
            ) from None
        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_session(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: images.numpy()})[0])

        return run_session
    raise SystemExit(f"error: {model} is neither a .pt2 nor an .onnx file")


def check_program_archive(model: Path) -> None:
    """Refuses a ``.pt2`` file that ``torch.export.load`` would unpickle, before loading it.

    ``torch.export.load`` reads a weight or constant marked ``use_pickle`` with
    ``torch.load(weights_only=False)``, custom objects with ``pickle``, and a
    ``.pt`` entry (sample inputs, the legacy weights or constants) unsafely when a
    safe load of it fails: each runs whatever code a crafted file names. A file
    written by ``python -m project export`` holds none of these.

    Raises:
        SystemExit: One line naming the file and the entry.
    """
    refused = f"error: {model} is refused"
    try:
        with zipfile.ZipFile(model) as archive:
            for name in archive.namelist():
                if name.endswith(("_weights_config.json", "_constants_config.json")):
                    entries = json.loads(archive.read(name)).get("config", {})
                    for key, entry in entries.items():
                        stored = str(entry.get("path_name", ""))
                        if entry.get("use_pickle") or stored.startswith(PICKLED_CONSTANTS):
                            raise SystemExit(
                                f"{refused}: {key} ({name}) is stored as a pickled object, "
                                "which loading would run; export the model again"
                            )
                elif name.endswith(".pt"):
                    try:
                        torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                    except Exception:
                        raise SystemExit(
                            f"{refused}: {name} is not plain tensors, and torch.export.load "
                            "would unpickle it, running what it names; export the model again"
                        ) from None
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as error:
        raise SystemExit(
            f"error: {model} is not a program written by torch.export.save ({error})"
        ) from None


def image_paths(inputs: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files named or found under the folders named; and what could not be used."""
    paths, unusable = [], []
    for given in map(Path, inputs):
        if given.is_dir():
            found, others = scan_folder(given)
            paths += found
            unusable += [(str(p), "not an image file (by its extension)") for p in others]
        elif given.is_file():
            paths.append(given)
        else:
            unusable.append((str(given), "no such file or folder"))
    return paths, unusable


def prepared_images(
    paths: Sequence[Path], sidecar: dict[str, Any], unusable: list[tuple[str, str]]
) -> Iterator[tuple[Path, torch.Tensor]]:
    """Each usable file, decoded and given the evaluation transform; the rest go to ``unusable``."""
    crop, resize = sidecar.get("crop_size"), sidecar.get("resize_size")
    transform = v2.Compose(eval_transforms(crop, resize)) if crop is not None else None
    size = tuple(sidecar["input_size"])
    for path in paths:
        try:
            image = load_image(path, sidecar["channels"])
        except UnreadableImageError as error:
            unusable.append((str(path), error.reason))
            continue
        if transform is not None:
            image = transform(image)
        if tuple(image.shape[-2:]) != size:
            unusable.append(
                (
                    str(path),
                    f"{image.shape[-2]}x{image.shape[-1]}, the model takes {size[0]}x{size[1]}",
                )
            )
            continue
        yield path, image


def predict(
    predictor: Predictor,
    images: Iterator[tuple[Path, torch.Tensor]],
    batch_size: int,
) -> Iterator[tuple[Path, torch.Tensor]]:
    """``(path, probabilities)`` for every image, run ``batch_size`` at a time."""
    batch: list[tuple[Path, torch.Tensor]] = []
    for item in images:
        batch.append(item)
        if len(batch) == batch_size:
            yield from _run(predictor, batch)
            batch = []
    if batch:
        yield from _run(predictor, batch)


def _run(predictor: Predictor, batch: list[tuple[Path, torch.Tensor]]):
    probabilities = predictor(torch.stack([image for _, image in batch]))
    return zip([path for path, _ in batch], probabilities.float(), strict=True)


def write_csv(rows: Iterator[tuple[Path, torch.Tensor]], class_names: list[str], output) -> int:
    """Writes predict's CSV columns to the open file ``output``; returns the rows written."""
    writer = csv.writer(output)
    writer.writerow(prediction_header(class_names))
    count = 0
    for path, probabilities in rows:
        writer.writerow(prediction_row(path, probabilities, class_names))
        count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m project.infer",
        description="Class probabilities of images from an exported model (model.pt2 or "
        "model.onnx, with model.json beside it).",
    )
    parser.add_argument("model", type=Path, help="model.pt2 or model.onnx")
    parser.add_argument("images", nargs="+", help="image files and folders (searched at any depth)")
    parser.add_argument("--output", type=Path, help="the CSV to write (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    sidecar = read_sidecar(args.model)
    predictor = load_predictor(args.model)
    paths, unusable = image_paths(args.images)
    rows = predict(predictor, prepared_images(paths, sidecar, unusable), args.batch_size)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w", newline="") as file:
            written = write_csv(rows, sidecar["class_names"], file)
    else:
        written = write_csv(rows, sidecar["class_names"], sys.stdout)
    for path, reason in unusable:
        sys.stderr.write(f"skipped {path}: {reason}\n")
    where = f" to {args.output}" if args.output else ""
    sys.stderr.write(f"{written} predictions{where}; {len(unusable)} files skipped\n")
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
