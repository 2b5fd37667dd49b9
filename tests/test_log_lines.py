"""Progress for logs (``configs/presets/log-lines.yaml``): one plain line per epoch, not a bar."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, preset, run_cli

from project.callbacks.progress import PlainProgress


@pytest.mark.slow
def test_the_preset_prints_one_line_per_epoch_with_its_figures(
    workdir: Path, capsys: pytest.CaptureFixture
):
    cli = run_cli(
        "fit",
        *preset("log-lines"),
        *FAST,
        "--trainer.enable_progress_bar=true",
        "--trainer.max_epochs=2",
        "--test_after_fit=false",
    )
    assert isinstance(cli.trainer.progress_bar_callback, PlainProgress)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert "train/loss " in lines[-1] and "val/acc " in lines[-1]


def test_lines_every_n_batches_must_be_zero_or_more():
    with pytest.raises(ValueError, match="every_n_batches must be 0 or more, got -1"):
        PlainProgress(every_n_batches=-1)
