"""Class names end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST, run_cli, tensorboard_tags
from fakes import write_image_folder

from project.callbacks import PredictionWriter

CLASSES = ["bird", "cat", "dog"]

# -- CSV --------------------------------------------------------------------------------------


# -- torchvision datasets on disk -----------------------------------------------------------


# -- class names end to end ----------------------------------------------------------------


@pytest.mark.slow
def test_class_names_travel_from_the_folder_to_checkpoint_logs_and_predictions(workdir: Path):
    root = write_image_folder(workdir / "data" / "pets", per_class=10)
    config = ["--config", "configs/experiments/imagefolder.yaml", "--data.root", str(root)]
    small = ["--data.num_workers=0", "--data.image_size=32"]  # names, not pixels, matter here
    cli = run_cli("fit", *config, *FAST, *small)
    best = cli.trainer.checkpoint_callback.best_model_path
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["class_names"] == CLASSES
    assert state["state_dict"]["normalize.mean"].shape == (1, 3, 1, 1)  # the model standardizes
    scalars, _ = tensorboard_tags(Path(cli.trainer.log_dir))
    assert {f"test/recall/{name}" for name in CLASSES} <= scalars

    predict = run_cli(
        "predict",
        *config,
        *FAST,
        *small,
        f"--data.predict_root={root / 'dog'}",
        f"--ckpt_path={best}",
    )
    writer = next(c for c in predict.trainer.callbacks if isinstance(c, PredictionWriter))
    with writer.written.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[3:] == CLASSES
    assert {row["predicted"] for row in rows} <= set(CLASSES)
    assert len(rows) == 10
