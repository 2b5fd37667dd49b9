"""The model owns its input contract, and facts flow one way: data -> CLI -> model."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, REPO, run_cli

import project
from project.checkpoints import CheckpointError
from project.models import ConvNet, ImageClassifier
from project.models.inputs import InputNormalization

# -- the contract -------------------------------------------------------------------------


def test_the_model_takes_uint8_images_or_floats_in_0_1_and_standardizes_them_itself():
    torch.manual_seed(0)
    model = ImageClassifier(
        ConvNet(4, in_channels=3, widths=[8]), 4, mean=[0.2, 0.4, 0.6], std=[0.5] * 3
    )
    model.eval()
    images = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    with torch.no_grad():
        from_uint8 = model(images)
        from_float = model(images.float() / 255)
        by_hand = model.net(
            (images.float() / 255 - torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) / 0.5
        )
    assert torch.allclose(from_uint8, from_float, atol=1e-6)
    assert torch.allclose(from_uint8, by_hand, atol=1e-6)
    # The statistics are buffers: they are in the state dict, and a fresh model takes them.
    state = model.state_dict()
    assert torch.equal(state["normalize.mean"].flatten(), torch.tensor([0.2, 0.4, 0.6]))
    fresh = ImageClassifier(ConvNet(4, in_channels=3, widths=[8]), 4).eval()
    assert not fresh.normalize.is_set
    fresh.load_state_dict(state)
    assert fresh.normalize.is_set
    with torch.no_grad():
        assert torch.equal(fresh(images), from_uint8)


def test_wrong_inputs_and_missing_statistics_are_one_line_errors():
    model = ImageClassifier(ConvNet(4, in_channels=3, widths=[8]), 4, mean=[0.5] * 3, std=[0.2] * 3)
    with pytest.raises(
        ValueError, match=r"^the model takes \(N, 3, H, W\) images, got shape \(2, 1, 8, 8\)$"
    ):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"uint8 or float images, got torch\.int64"):
        model(torch.zeros(2, 3, 8, 8, dtype=torch.int64))
    unset = ImageClassifier(ConvNet(4, in_channels=1, widths=[8]), 4)
    with pytest.raises(
        ValueError, match=r"no input statistics: give model.init_args.mean and std"
    ) as info:
        unset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"one value per channel \(1\)"):
        InputNormalization(1, [0.5, 0.5], [0.2, 0.2])
    with pytest.raises(ValueError, match="must be positive"):
        InputNormalization(1, [0.5], [0.0])


def test_a_checkpoint_without_input_statistics_is_refused_in_one_line(tmp_path: Path):
    model = ImageClassifier(ConvNet(3, in_channels=1, widths=[8]), 3, mean=[0.3], std=[0.4])
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    old = {
        "state_dict": state,
        "hyper_parameters": {"num_classes": 3, "channels": 1},
        "pytorch-lightning_version": "2.6.0",
    }
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(
        CheckpointError, match=r"old\.ckpt does not build ImageClassifier: .*no input statistics"
    ) as error:
        ImageClassifier.load_from_checkpoint(
            tmp_path / "old.ckpt", net=ConvNet(3, in_channels=1, widths=[8])
        )
    assert "\n" not in str(error.value)


# -- a checkpoint predicts alone ----------------------------------------------------------

# Run in a fresh interpreter: the checkpoint and torchvision.io, no datamodule, no config.
STANDALONE = """
import csv, json, sys
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
import importlib

checkpoint, table, kind, sizes = sys.argv[1:]
# The evaluation resize and crop that the data applied (none: the files' own size).
crop, resize = json.loads(sizes)
evaluation = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)] if crop else [])
module, _, name = kind.rpartition(".")
model = getattr(importlib.import_module(module), name)
model = model.load_from_checkpoint(checkpoint, map_location="cpu").eval()
mode = ImageReadMode.GRAY if model.normalize.channels == 1 else ImageReadMode.RGB
rows = list(csv.DictReader(open(table)))
images = torch.stack([evaluation(decode_image(row["path"], mode=mode)) for row in rows])
with torch.no_grad():
    probabilities = model(images).softmax(dim=1)
names = model.class_names
print(json.dumps({
    "type": type(model).__name__,
    "data_modules": sorted(m for m in sys.modules if m.startswith("project.data")),
    "classes_agree": all(
        names[int(p.argmax())] == row["predicted"] for p, row in zip(probabilities, rows)
    ),
    "largest_difference": max(
        abs(float(row[name]) - float(value))
        for p, row in zip(probabilities, rows)
        for name, value in zip(names, p)
    ),
    "rows": len(rows),
}))
"""


def assert_a_checkpoint_predicts_alone(kind: str, config: list[str], workdir: Path) -> None:
    """Fit and predict with ``config``; then the checkpoint alone must give predictions.csv.

    In a fresh interpreter, ``<kind>.load_from_checkpoint`` and images decoded by
    torchvision.io, resized and cropped as the config's evaluation does, with no
    datamodule and no config, must give the classes and probabilities ``predict`` wrote.
    """
    trained = run_cli("fit", *config, *FAST)
    checkpoint = trained.trainer.checkpoint_callback.best_model_path
    predicted = run_cli("predict", *config, *FAST, f"--ckpt_path={checkpoint}")
    table = next(c for c in predicted.trainer.callbacks if hasattr(c, "written")).written
    with table.open() as file:
        rows = len(list(csv.DictReader(file)))
    data = trained.datamodule
    assert rows == 2 * data.batch_size  # two batches of the test split
    sizes = json.dumps([data.image_size, data.image_size and data.eval_resize_size()])
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE, checkpoint, str(table), kind, sizes],
        capture_output=True,
        text=True,
        cwd=workdir,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["type"] == kind.rpartition(".")[2]
    assert report["data_modules"] == [], "the model needed the data code"
    assert report["rows"] == rows and report["classes_agree"]
    # predictions.csv keeps six decimals.
    assert report["largest_difference"] <= 1e-5


@pytest.mark.slow
def test_a_checkpoint_and_torchvision_io_give_what_predict_wrote(workdir: Path):
    assert_a_checkpoint_predicts_alone(
        "project.models.ImageClassifier", ["--config=configs/default.yaml"], workdir
    )


# -- one way: data -> CLI -> model ---------------------------------------------------------


def test_data_and_model_never_reach_each_other_through_the_trainer():
    package = project.__name__  # the package's name, whatever a starter renamed it to
    forbidden = {
        "data": rf"\.lightning_module\b|\b{package}\.models\b",
        "models": rf"\.datamodule\b|\b{package}\.data\b",
        "losses": rf"\.datamodule\b|\b{package}\.data\b",
    }
    found = []
    for folder, pattern in forbidden.items():
        for path in sorted((REPO / package / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(pattern, line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == []
