"""Peak memory of training with and without activation checkpointing, and what it costs in time.

    python -m benchmarks.memory [--steps 4] [--markdown]

Each network trains ``--steps`` SGD steps on random images in a fresh process,
once as it is (the baseline) and once with its stages checkpointed
(``activation_checkpointing``, :mod:`project.models.memory`). The figures: the
peak resident memory of the process (RSS, on the CPU) or the peak CUDA memory
allocated (on a GPU), each minus the same process's figure once the network and
its batch exist, so that what is compared is what training adds; and the median
time per step after the first. Not part of ``make bench``.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.harness import REPO, Row, argument_parser, finish

# label: (network class path, its arguments, image side, batch size)
NETWORKS = {
    "ResNet-18 (CIFAR), 32 px, batch 128": (
        "project.models.resnet.ResNet",
        {"blocks": [2, 2, 2, 2], "widths": [64, 128, 256, 512]},
        32,
        128,
    ),
    "torchvision resnet50, 160 px, batch 16": (
        "project.models.backbones.TorchvisionNet",
        {"name": "resnet50"},
        160,
        16,
    ),
}
STAGES = {
    "project.models.resnet.ResNet": True,
    "project.models.backbones.TorchvisionNet": ["layer1", "layer2", "layer3", "layer4"],
}

CHILD = """
import importlib, json, resource, sys, time, torch
path, kwargs, side, batch, steps, checkpointed, stages = json.loads(sys.argv[1])
module, name = path.rsplit(".", 1)
if checkpointed:
    kwargs = {**kwargs, "activation_checkpointing": stages}
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
net = getattr(importlib.import_module(module), name)(num_classes=10, **kwargs).to(device)
images = torch.randn(batch, 3, side, side, device=device)
targets = torch.randint(0, 10, (batch,), device=device)
optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
def peak():
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before, times = peak(), []
for _ in range(steps):
    started = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(net(images), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if cuda:
        torch.cuda.synchronize()
    times.append(time.perf_counter() - started)
print(json.dumps({"added_mib": peak() - before, "times": times}))
"""


def measure(label: str, checkpointed: bool, steps: int) -> dict:
    path, kwargs, side, batch = NETWORKS[label]
    settings = json.dumps([path, kwargs, side, batch, steps, checkpointed, STAGES[path]])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, settings], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{label}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    steps = 2 if args.smoke else args.steps
    labels = list(NETWORKS)[:1] if args.smoke else list(NETWORKS)
    device = "GPU" if torch.cuda.is_available() else "CPU"
    rows = []
    for label in labels:
        plain, checkpointed = measure(label, False, steps), measure(label, True, steps)
        unit = "MiB (CUDA allocated)" if device == "GPU" else "MiB (RSS)"
        rows.append(
            Row(
                label,
                f"memory training adds, {device}",
                unit,
                checkpointed["added_mib"],
                plain["added_mib"],
                note="template: stages checkpointed; baseline: not",
            )
        )
        rows.append(
            Row(
                label,
                f"time per step, {device}",
                "s",
                statistics.median(checkpointed["times"][1:]),
                statistics.median(plain["times"][1:]),
            )
        )
    finish(rows, args)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(
        f"({time.perf_counter() - started:.0f} s; peak RSS of this process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
    )
