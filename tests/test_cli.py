"""The command line a user meets first: help, config round trips, fit/test/resume/predict."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST, run_cli

from project.exceptions import InputValueError

DEFAULT = ["--config", "configs/default.yaml"]


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in out
    assert "Runs the full optimization routine." in out


@pytest.mark.parametrize(
    "subcommand, own_option",
    [("fit", "--test_after_fit"), ("validate", "--ckpt_path"), ("predict", "--return_predictions")],
)
def test_each_subcommand_help_shows_its_options(
    subcommand: str, own_option: str, capsys: pytest.CaptureFixture
):
    # Only the subcommand named first gets its parser built; its help must be whole.
    with pytest.raises(SystemExit) as exit_info:
        run_cli(subcommand, "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (own_option, "--model", "--data", "--trainer.max_epochs", "--config"):
        assert option in out, f"{subcommand} --help lacks {option}"


@pytest.mark.slow
def test_class_count_and_channels_come_from_the_data(workdir: Path):
    cli = run_cli("fit", *DEFAULT, '--data.classes=["3","5","8"]', *FAST)
    model = cli.model
    assert model.num_classes == 3
    assert model.class_names == ["3", "5", "8"]
    assert model.net.classifier.out_features == 3
    assert model.net.features[0].in_channels == 1
    assert model.normalize.channels == 1
    # No config types these facts into the model: they come from the data alone.
    configs = sorted(Path("configs").rglob("*.yaml"))
    assert Path("configs/default.yaml") in configs and len(configs) > 10
    for path in configs:
        model = yaml.safe_dump((yaml.safe_load(path.read_text()) or {}).get("model", {}))
        assert not re.search(r"\b(num_classes|in_channels|channels|class_names):", model), path


@pytest.mark.slow
def test_main_without_run_builds_what_fit_gets_from_the_same_yaml(workdir: Path):
    # The README's Python snippet and the notebooks build their objects this way.
    from project.cli import main

    cli = main([*DEFAULT, '--data.classes=["3","5","8"]', *FAST], run=False)
    assert cli.trainer.state.fn is None, "nothing ran"
    assert cli.model.class_names == ["3", "5", "8"]
    assert cli.trainer.max_epochs == 1
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2


@pytest.mark.slow
def test_print_config_fed_back_reproduces_the_run(workdir: Path, capsys: pytest.CaptureFixture):
    overrides = ["--trainer.max_epochs=2", "--model.init_args.optimizer.init_args.lr=0.002"]
    with pytest.raises(SystemExit):
        run_cli("fit", *DEFAULT, *overrides, "--print_config")
    printed = capsys.readouterr().out
    Path("printed.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", "printed.yaml", "--print_config")
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)

    fast = [a for a in FAST if not a.startswith("--trainer.max_epochs")]
    first = run_cli("fit", *DEFAULT, *overrides, *fast).trainer.callback_metrics
    again = run_cli("fit", "--config", "printed.yaml", *fast).trainer.callback_metrics
    assert first.keys() == again.keys()
    for key in ("test/loss", "test/acc", "test/f1"):
        assert torch.allclose(first[key], again[key]), key


@pytest.mark.slow
def test_each_run_saves_its_resolved_config_next_to_its_logs(workdir: Path):
    cli = run_cli("fit", *DEFAULT, *FAST)
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert saved["data"]["class_path"] == "project.data.DigitsDataModule"
    assert saved["trainer"]["max_epochs"] == 1
    # Linked values are derived again from the data, so the config never repeats them.
    assert "num_classes" not in saved["model"]["init_args"]


@pytest.mark.slow
def test_short_run_on_digits_learns(workdir: Path):
    cli = run_cli(
        "fit",
        *DEFAULT,
        "--trainer.max_epochs=6",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    )
    metrics = cli.trainer.callback_metrics
    # Chance is 0.10; six epochs of the default network reach about 0.97.
    assert metrics["test/acc"] >= 0.93, metrics["test/acc"]
    assert metrics["test/f1"] >= 0.93, metrics["test/f1"]


@pytest.mark.slow
def test_fit_prints_a_summary_and_no_advertising(
    workdir: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level("INFO", logger="lightning.pytorch"):
        cli = run_cli("fit", *DEFAULT, *FAST)
    text = capsys.readouterr().out
    told = [record.getMessage() for record in caplog.records]
    assert any("Normalization from the training split" in line for line in told)
    assert not [line for line in told if "litlogger" in line or "litmodels" in line]
    best = cli.trainer.checkpoint_callback.best_model_path
    assert "test accuracy" in text and "test macro F1" in text
    assert best and best in text
    assert f"tensorboard --logdir {Path(cli.trainer.log_dir).parent}" in text


@pytest.mark.slow
def test_the_model_summary_shows_shapes_and_flops(workdir: Path, capsys: pytest.CaptureFixture):
    cli = run_cli("fit", *DEFAULT, *FAST, "--trainer.enable_model_summary=true")
    text = capsys.readouterr().out
    # The data's image size makes the example input: a uint8 image, as the model takes.
    assert cli.model.example_input_array.shape == (1, 1, 16, 16)
    assert cli.model.example_input_array.dtype == torch.uint8
    flops = re.search(r"Total FLOPs: ([\d.]+) ([KMG]?)", text)
    assert flops and float(flops[1]) > 0, text[-1500:]
    assert "[1, 10]" in text.replace("\n", ""), "the network's output shape"


@pytest.mark.slow
def test_resuming_a_one_cycle_run_for_longer_is_refused_clearly(workdir: Path):
    run_cli("fit", *DEFAULT, *FAST, "--trainer.max_epochs=2", "--test_after_fit=false")
    # An input error: python -m project prints it in one line and exits with status 2.
    with pytest.raises(InputValueError, match=r"OneCycleLR was built for 4 optimizer steps.*6"):
        run_cli("fit", *DEFAULT, *FAST, "--trainer.max_epochs=3", "--ckpt_path=last")


@pytest.mark.slow
def test_a_run_folder_stands_for_its_newest_best_checkpoint(workdir: Path):
    from project.models import ImageClassifier

    fitted = run_cli("fit", *DEFAULT, *FAST, "--test_after_fit=false")
    best = fitted.trainer.checkpoint_callback.best_model_path
    tested = run_cli("test", *DEFAULT, *FAST, "--ckpt_path=logs/default")
    assert Path(tested.trainer.ckpt_path).resolve() == Path(best).resolve()
    model = ImageClassifier.load_from_checkpoint("logs/default")
    assert torch.equal(model.normalize.mean, fitted.model.normalize.mean.cpu())


@pytest.mark.slow
def test_fit_then_test_best_then_resume_last(workdir: Path):
    # A schedule that does not fix the run's length, so the resumed run may be longer.
    config = [
        *DEFAULT,
        "--model.init_args.scheduler=torch.optim.lr_scheduler.StepLR",
        "--model.init_args.scheduler.init_args.step_size=1",
    ]
    first = run_cli("fit", *config, *FAST, "--trainer.max_epochs=2")
    best = Path(first.trainer.checkpoint_callback.best_model_path)
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file()

    tested = run_cli("test", *config, *FAST, "--ckpt_path=best")
    assert tested.trainer.ckpt_path == str(best)
    assert 0 <= float(tested.trainer.callback_metrics["test/acc"]) <= 1

    validated = run_cli("validate", *config, *FAST, "--ckpt_path=last")
    assert validated.trainer.ckpt_path == str(last)

    resumed = run_cli(
        "fit",
        *config,
        *FAST,
        "--trainer.max_epochs=3",
        "--ckpt_path=last",
        "--test_after_fit=false",
    )
    assert resumed.trainer.ckpt_path == str(last)
    # Two epochs came from the checkpoint; only the third one ran.
    assert resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == 3 * 2


def test_ckpt_path_last_without_an_earlier_run_names_where_it_looked(
    workdir: Path, capsys: pytest.CaptureFixture
):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("test", *DEFAULT, *FAST, "--ckpt_path=last")
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.splitlines()[0]
    assert re.match(r"error: ckpt_path: no run in logs/default .*/\*/checkpoints/last\.ckpt", line)


@pytest.mark.slow
def test_predict_on_a_folder_writes_one_row_per_image(workdir: Path, digits_tree: Path):
    trained = run_cli("fit", *DEFAULT, *FAST)
    images = workdir / "unlabelled"
    images.mkdir()
    sources = (
        sorted((digits_tree / "7").glob("*.png"))[:5] + sorted(digits_tree.glob("1/*.png"))[:4]
    )
    for index, source in enumerate(sources):
        (images / f"img{index}.png").write_bytes(source.read_bytes())
    best = trained.trainer.checkpoint_callback.best_model_path
    run_cli("predict", *DEFAULT, f"--data.init_args.predict_root={images}", f"--ckpt_path={best}")
    written = sorted(Path("logs/default").glob("version_*/predictions.csv"))[-1]
    with written.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(sources)
    assert {Path(row["path"]).name for row in rows} == {f"img{i}.png" for i in range(9)}
    for row in rows:
        probabilities = [float(row[str(digit)]) for digit in range(10)]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] in [str(d) for d in range(10)]


SCHEDULERS = {
    "StepLR": ({"step_size": 1, "gamma": 0.5}, "epoch"),
    "ExponentialLR": ({"gamma": 0.9}, "epoch"),
    "CosineAnnealingLR": ({"T_max": 3}, "epoch"),
    "OneCycleLR": ({"max_lr": 0.01}, "step"),
    "ReduceLROnPlateau": ({"patience": 1}, "epoch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_from_yaml_steps_at_its_interval(name: str, workdir: Path):
    init_args, interval = SCHEDULERS[name]
    args = [f"--model.init_args.scheduler.init_args.{k}={v}" for k, v in init_args.items()]
    cli = run_cli(
        "fit",
        *DEFAULT,
        f"--model.init_args.scheduler=torch.optim.lr_scheduler.{name}",
        *args,
        *FAST,
        "--trainer.max_epochs=2",
        "--test_after_fit=false",
    )
    (config,) = cli.trainer.lr_scheduler_configs
    assert type(config.scheduler).__name__ == name
    assert config.interval == interval
    if name == "ReduceLROnPlateau":
        assert config.monitor == "val/loss"
    if name == "OneCycleLR":
        assert config.scheduler.total_steps == cli.trainer.estimated_stepping_batches == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [
        ("torch.optim.AdamW", []),
        ("torch.optim.Adam", []),
        (
            "torch.optim.SGD",
            [
                "--model.init_args.optimizer.init_args.momentum=0.9",
                "--model.init_args.optimizer.init_args.nesterov=true",
            ],
        ),
    ],
)
def test_optimizer_from_yaml_keeps_norms_and_biases_free_of_weight_decay(
    optimizer: str, extra: list[str], workdir: Path
):
    cli = run_cli(
        "fit",
        *DEFAULT,
        f"--model.init_args.optimizer={optimizer}",
        "--model.init_args.optimizer.init_args.lr=0.01",
        "--model.init_args.optimizer.init_args.weight_decay=0.001",
        *extra,
        "--model.init_args.scheduler=null",
        *FAST,
        "--test_after_fit=false",
    )
    (opt,) = cli.trainer.optimizers
    assert type(opt).__name__ == optimizer.rsplit(".", 1)[1]
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.001 and all(p.ndim > 1 for p in decayed["params"])
    assert free["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in free["params"])
