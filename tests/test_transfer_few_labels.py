"""Transfer learning on few labels: digits 0-4 pretrained, then 5-9 from ten images per class.

These tests need two leaves, transfer learning and few labels (the digits-5to9-* configs
draw their ten images per class with ``project.data.subsets.FewLabels``), so they go with
either.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, experiment, run_cli
from fakes import train_digits_0to4
from test_model_inputs import assert_a_checkpoint_predicts_alone


@pytest.mark.slow
def test_fine_tuning_from_digits_0_to_4_beats_scratch_on_5_to_9_with_10_labels_each(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory, digits_tree: Path
):
    pretrained = train_digits_0to4(tmp_path_factory.getbasetemp() / "digits-0to4", digits_tree)
    accuracy = {}
    for name in ("scratch", "finetune"):
        cli = run_cli(
            "fit",
            *experiment(f"digits-5to9-{name}"),
            *FAST,
            "--trainer.max_epochs=12",
            "--trainer.limit_val_batches=1.0",
            "--trainer.limit_test_batches=1.0",
            *([f"--model.init_args.init_from={pretrained}"] if name == "finetune" else []),
        )
        accuracy[name] = float(cli.trainer.callback_metrics["test/acc"])
    assert accuracy["finetune"] > accuracy["scratch"] + 0.05, accuracy


@pytest.mark.slow
def test_a_fine_tuned_checkpoint_predicts_alone(
    workdir: Path, digits_tree: Path, tmp_path_factory: pytest.TempPathFactory
):
    pretrained = train_digits_0to4(tmp_path_factory.getbasetemp() / "digits-0to4", digits_tree)
    config = [
        *experiment("digits-5to9-finetune"),
        f"--model.init_args.init_from={pretrained}",
    ]
    assert_a_checkpoint_predicts_alone(
        "project.models.transfer.TransferClassifier", config, workdir
    )
