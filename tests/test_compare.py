"""project.compare: every config with every seed, one markdown table of mean and std."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import FAST

from project.compare import RunResult, label_of, main, markdown, summarize

METRICS = ["test/acc", "test/f1", "test/recall_min"]


@pytest.mark.slow
def test_compare_runs_each_config_with_each_seed_and_tabulates(
    workdir: Path, capsys: pytest.CaptureFixture
):
    results = main(
        [
            "--config",
            "configs/experiments/longtail-ce.yaml",
            "--seeds",
            "0",
            "1",
            "--output",
            "table.md",
            *FAST,
        ]
    )
    assert [(r.label, r.seed) for r in results] == [("longtail-ce", 0), ("longtail-ce", 1)]
    for result in results:
        saved = yaml.safe_load((Path(result.log_dir) / "config.yaml").read_text())
        assert saved["seed_everything"] == result.seed
        assert saved["data"]["init_args"]["seed"] == result.seed  # the split follows the seed
        assert set(result.metrics) == set(METRICS)
        assert all(0 <= value <= 1 for value in result.metrics.values())
    table = Path("table.md").read_text()
    assert table in capsys.readouterr().out
    mean_row = next(line for line in table.splitlines() if line.startswith("| longtail-ce | 0 1 |"))
    f1 = [r.metrics["test/f1"] for r in results if r.label == "longtail-ce"]
    assert f"{sum(f1) / 2:.4f} ± " in mean_row


@pytest.mark.slow
def test_runs_without_a_logger_keep_their_files_apart(workdir: Path):
    # Without a logger, Lightning puts config.yaml and checkpoints in the working
    # directory: the second run used to stop there rather than overwrite the first's.
    results = main(
        [
            "--config",
            "configs/experiments/digits-5to9-scratch.yaml",
            "--seeds",
            "0",
            "1",
            "--output",
            "out/table.md",
            "--trainer.logger=false",
            *FAST,
        ]
    )
    assert [r.seed for r in results] == [0, 1]
    assert [Path(r.log_dir).resolve() for r in results] == [
        (workdir / "out" / "table" / f"digits-5to9-scratch-seed{seed}").resolve() for seed in (0, 1)
    ]
    for result in results:
        saved = yaml.safe_load((Path(result.log_dir) / "config.yaml").read_text())
        assert saved["seed_everything"] == result.seed
        assert list((Path(result.log_dir) / "checkpoints").glob("*.ckpt"))
    assert not (workdir / "config.yaml").exists()


def test_mean_and_sample_std_per_config():
    results = [
        RunResult("a", 0, {"test/f1": 0.5}, None),
        RunResult("a", 1, {"test/f1": 0.7}, None),
        RunResult("a", 2, {"test/f1": 0.9}, None),
        RunResult("b", 0, {"test/f1": 0.8}, None),
    ]
    summary = summarize(results, ["test/f1"])
    assert summary["a"]["test/f1"] == pytest.approx((0.7, 0.2))  # sample std, n - 1
    assert summary["b"]["test/f1"] == (0.8, None)
    table = markdown(results, ["test/f1"])
    assert "| a | 0 1 2 | 0.7000 ± 0.2000 |" in table
    assert "| b | 0 | 0.8000 |" in table
    assert label_of(["configs/default.yaml", "configs/presets/debug.yaml"]) == "default + debug"


def test_a_missing_config_is_named_before_anything_runs(workdir: Path):
    with pytest.raises(FileNotFoundError, match=r"configs/nope\.yaml"):
        main(["--config", "configs/default.yaml", "--config", "configs/nope.yaml", *FAST])
