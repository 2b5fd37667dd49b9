"""Serve an exported model over HTTP with LitServe: POST an image, get its class.

    pip install -e ".[serve]"
    python -m project.serve logs/default/version_0/export/model.pt2 --port 8000

    curl --data-binary @photo.png http://127.0.0.1:8000/predict
    curl -F file=@photo.png http://127.0.0.1:8000/predict
    curl http://127.0.0.1:8000/health

A request's body is the image file's bytes, or a multipart form with the image
in a field named ``file``. The answer is JSON: ``{"predicted": name,
"probability": p, "probabilities": {name: p, ...}}``. Requests that arrive
together are run as one batch (``--max-batch-size``, ``--batch-timeout``). A
request the model cannot answer gets a 4xx and ``{"detail": "<one line>"}``:
an empty body (400), a body over ``--max-bytes`` (413), a file that is no image
(415), an image with another channel count than the model takes (422); the
server goes on serving. The image is prepared as in ``python -m project.infer``
(the evaluation resize and crop of ``model.json``), except that a grayscale
image for an RGB model, or the reverse, is refused rather than converted.

This module must not use ``from __future__ import annotations``: LitServe and
FastAPI read ``decode_request``'s annotation to find the request reader.
"""

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import numpy as np
import torch
from fastapi import Depends, HTTPException, Request
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from project.images import eval_transforms, match_channels, to_uint8
from project.infer import load_predictor, read_sidecar

# Set by main() before the server starts; its HTTP processes are forked from that one.
SETTINGS: dict[str, Any] = {}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def decode_upload(data: bytes, channels: int) -> torch.Tensor:
    """The uploaded image as uint8 ``(channels, H, W)``, or an HTTP error saying why not."""
    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED
        )
    except RuntimeError:
        image = _decode_with_pil(data)
    have = image.shape[0] - 1 if image.shape[0] in (2, 4) else image.shape[0]  # alpha aside
    if have != channels:
        names = {1: "grayscale", 3: "RGB"}
        raise HTTPException(
            422,
            f"the image has {have} channels ({names.get(have, 'unknown')}); the model takes "
            f"{channels} ({names.get(channels, 'unknown')})",
        )
    return match_channels(to_uint8(image), channels)


def _decode_with_pil(data: bytes) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            gray = image.mode in GRAY_MODES
            array = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):
        raise HTTPException(
            415,
            f"the body ({len(data):,} bytes) is not an image this server decodes "
            "(PNG, JPEG, GIF, WebP, BMP, TIFF)",
        ) from None
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


async def read_image(request: Request) -> dict[str, Any]:
    """Reads, decodes and prepares the posted image in the HTTP process.

    Checked here, before the request is queued, so a bad request fails alone
    rather than with the batch it would have joined.
    """
    limit = SETTINGS["max_bytes"]
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is {int(declared):,} bytes; the limit is {limit:,}")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "the multipart form has no file field named 'file'")
        data = await upload.read()
    else:
        data = await request.body()
    if not data:
        raise HTTPException(
            400, "empty body: post the image's bytes, or a multipart form with a field named file"
        )
    image = SETTINGS["transform"](decode_upload(data, SETTINGS["channels"]))
    if tuple(image.shape[-2:]) != SETTINGS["size"]:
        have, takes = "x".join(map(str, image.shape[-2:])), "x".join(map(str, SETTINGS["size"]))
        raise HTTPException(422, f"the image is {have} pixels; the model takes {takes}")
    return {"image": image.numpy()}


class ClassifierAPI(ls.LitAPI):
    """Runs the exported model on batches of prepared images; one JSON answer per image."""

    def __init__(self, model: str, class_names: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.class_names = class_names

    def setup(self, device: str) -> None:
        torch.set_num_threads(1)  # one worker process per core
        self.predictor = load_predictor(Path(self.model))

    def decode_request(self, request: Annotated[dict, Depends(read_image)]) -> torch.Tensor:
        return torch.from_numpy(request["image"])

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 3:  # not batched (--max-batch-size 1)
            return self.predictor(images.unsqueeze(0))[0]
        return self.predictor(images)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, probabilities: torch.Tensor) -> dict[str, Any]:
        values = [float(p) for p in probabilities]
        best = max(range(len(values)), key=values.__getitem__)
        return {
            "predicted": self.class_names[best],
            "probability": values[best],
            "probabilities": dict(zip(self.class_names, values, strict=True)),
        }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m project.serve",
        description="Serve an exported model (model.pt2 or model.onnx, model.json beside it).",
    )
    parser.add_argument("model", type=Path, help="model.pt2 or model.onnx")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds to fill a batch")
    parser.add_argument("--max-bytes", type=int, default=10 * 2**20, help="largest body accepted")
    parser.add_argument("--workers", type=int, default=1, help="model processes")
    args = parser.parse_args(argv)
    sidecar = read_sidecar(args.model)
    load_predictor(args.model)  # a bad file fails here, in one line, not in a worker
    crop, resize = sidecar.get("crop_size"), sidecar.get("resize_size")
    SETTINGS.update(
        max_bytes=args.max_bytes,
        channels=sidecar["channels"],
        size=tuple(sidecar["input_size"]),
        transform=v2.Compose(eval_transforms(crop, resize)) if crop is not None else v2.Identity(),
    )
    api = ClassifierAPI(
        str(args.model.resolve()),
        sidecar["class_names"],
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=args.workers,
        max_payload_size=args.max_bytes,
        timeout=60,
    )
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


@contextlib.contextmanager
def running(model: Path, port: int, *options: str, start_within: float = 120) -> Iterator[str]:
    """Runs ``python -m project.serve MODEL --port PORT OPTIONS`` in a child process on
    127.0.0.1; yields its URL once ``/health`` answers, and stops it afterwards."""
    command = [sys.executable, "-m", "project.serve", str(model), f"--port={port}", *options]
    # Its output goes to a file: a pipe nobody reads would stop the server once full.
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_within
            while not _healthy(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    log.seek(0)
                    raise RuntimeError(
                        f"the server did not start: {' '.join(command)}\n{log.read()}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            server.send_signal(signal.SIGINT)  # LitServe stops its processes on SIGINT, not SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=5)
            # Its HTTP and model processes too, which a slow shutdown can leave behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


if __name__ == "__main__":
    main()
