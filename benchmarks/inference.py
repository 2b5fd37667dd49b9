"""Inference speed on the CPU: the exported program and ONNX Runtime against eager PyTorch.

    python -m benchmarks.inference [--rounds 5] [--seconds 2]

The default config's network (random weights: speed does not depend on them),
with its input normalization and softmax, as ``python -m project export``
writes it. Each side classifies uint8 batches of 1 and of 64 images for about
``--seconds`` per round, rounds alternating; the figure is the median of the
rounds' images per second. The baseline is the same module run eagerly under
``torch.inference_mode``. Then the server (``python -m project.serve``, when
LitServe is installed) answers ``--requests`` POSTs of one PNG each from 16
concurrent clients: its requests per second against eager's images per second at
batch 1, and its p50 and p99 latency against eager's time per image. Not part of
``make bench``.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.harness import Row, alternate, argument_parser, build_cli, finish, median

DEFAULT = "configs/default.yaml"


def images_per_second(run: Callable[[torch.Tensor], object], images: torch.Tensor, seconds: float):
    """Calls ``run(images)`` for about ``seconds`` (after one warm-up call); images per second."""
    run(images)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        run(images)
        calls += 1
    return calls * len(images) / elapsed


def exported_model(folder: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """The default config's classifier (as exported) and a batch of 64 images at its input size;
    model.pt2 and model.onnx written into ``folder``."""
    from project.export import ProbabilityModel, save_programs

    cli = build_cli(DEFAULT)
    model = cli.model
    model.set_input_statistics([0.5] * model.normalize.channels, [0.25] * model.normalize.channels)
    wrapped = ProbabilityModel(model).eval()
    size = cli.datamodule.image_size
    images = torch.randint(0, 256, (64, model.normalize.channels, size, size), dtype=torch.uint8)
    save_programs(wrapped, images, folder)
    return wrapped, images


def serve_rows(folder: Path, images: torch.Tensor, requests: int, eager_rate: float) -> list[Row]:
    """The server's requests/s and p50/p99 latency at 16 clients, against eager at batch 1."""
    import socket
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.io import encode_png

    from project.serve import running

    names = [str(i) for i in range(10)]
    size = list(images.shape[-2:])
    sidecar = {"class_names": names, "channels": images.shape[1], "input_size": size}
    (folder / "model.json").write_text(json.dumps({**sidecar, "crop_size": None}))
    bodies = [encode_png(image).numpy().tobytes() for image in images]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def ask(index: int) -> float:
        request = urllib.request.Request(
            url, data=bodies[index % len(bodies)], headers={"Content-Type": "image/png"}
        )
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
        return time.perf_counter() - start

    with running(folder / "model.pt2", port) as base:
        url = f"{base}/predict"
        with ThreadPoolExecutor(max_workers=16) as clients:
            list(clients.map(ask, range(64)))  # warm-up
            start = time.perf_counter()
            latencies = sorted(clients.map(ask, range(requests)))
            elapsed = time.perf_counter() - start
    per_image = 1000.0 / eager_rate
    p50 = 1000.0 * latencies[len(latencies) // 2]
    p99 = 1000.0 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    note = "template: python -m project.serve, model.pt2; baseline: eager PyTorch, one image"
    return [
        Row(
            "serving", "requests/s, 16 clients", "req/s", requests / elapsed, eager_rate, note=note
        ),
        Row("serving", "p50 latency, 16 clients", "ms", p50, per_image),
        Row("serving", "p99 latency, 16 clients", "ms", p99, per_image),
    ]


def measure(rounds: int, seconds: float, requests: int) -> list[Row]:
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        wrapped, images = exported_model(folder)
        program = torch.export.load(folder / "model.pt2").module()
        session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name

        def eager(batch: torch.Tensor):
            with torch.inference_mode():
                return wrapped(batch)

        def pt2(batch: torch.Tensor):
            with torch.inference_mode():
                return program(batch)

        def onnx(batch: torch.Tensor):
            return session.run(None, {input_name: batch.numpy()})

        for batch in (1, 64):
            chunk = images[:batch].contiguous()
            sides = {"eager": eager, "model.pt2": pt2, "model.onnx": onnx}
            runs = {
                k: (lambda f=f, c=chunk: images_per_second(f, c, seconds)) for k, f in sides.items()
            }
            measured = alternate(runs, rounds)
            if batch == 1:
                eager_rate = median(measured["eager"])
            for side in ("model.pt2", "model.onnx"):
                rows.append(
                    Row(
                        "inference",
                        f"{side} images/s, batch {batch}",
                        "images/s",
                        median(measured[side]),
                        median(measured["eager"]),
                        note=f"{side}: template column; eager PyTorch: baseline"
                        if batch == 1
                        else "",
                    )
                )
        if requests and importlib.util.find_spec("litserve") is not None:
            rows += serve_rows(folder, images, requests, eager_rate)
    return rows


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=1000, help="to the server (0: none)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.requests = 1, 0.2, 64
    finish(measure(args.rounds, args.seconds, args.requests), args)


if __name__ == "__main__":
    main()
