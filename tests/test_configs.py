"""Every YAML under configs/ runs in a fast form (and so parses); the GPU ones only parse here.

Whole configs run on their own; overlays (presets, the digits experiments)
run stacked on the default config, the way their first lines tell users to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, FAST, base_of, experiment, run_cli
from fakes import preparer_for

# configs/search/ holds search spaces for `python -m project.runner search`, not
# training configs (tests/test_runner.py runs them).
ALL = sorted(
    str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml") if p.parent.name != "search"
)


def needed_gpus(name: str) -> int:
    """GPUs a config declares with a ``# needs: N CUDA GPU(s)`` line (0 if none)."""
    found = re.search(r"^# needs: (\d+) CUDA GPUs?$", (CONFIGS / name).read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def config_args(name: str, workdir: Path) -> list[str]:
    args = [*base_of(name), "--config", f"configs/{name}"]
    prepare = preparer_for(name)
    if prepare is not None:
        args += prepare(workdir)
    return args


# A config that runs has parsed; the ones that need GPUs run where there are enough.
GPU_ONLY = [name for name in ALL if needed_gpus(name)]


def cuda_devices() -> int:
    """The machine's CUDA GPUs (the tests hide them from their own process)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    count = "import torch; print(torch.cuda.device_count())"
    result = subprocess.run([sys.executable, "-c", count], env=env, capture_output=True, text=True)
    return int(result.stdout.strip() or 0) if result.returncode == 0 else 0


@pytest.mark.slow
@pytest.mark.parametrize("name", GPU_ONLY)
def test_gpu_config_runs_where_its_gpus_are(name: str, workdir: Path):
    needed, present = needed_gpus(name), cuda_devices()
    if present < needed:
        pytest.skip(f"{name} needs {needed} CUDA GPU(s); this machine has {present}")
    # A real process that sees the GPUs; DDP starts its other ranks by re-running it.
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    fast = [a for a in FAST if not a.startswith(("--trainer.accelerator", "--trainer.devices"))]
    command = [sys.executable, "-m", "project", "fit", *config_args(name, workdir), *fast]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "test accuracy" in output and "GPU available: True (cuda), used: True" in output


@pytest.mark.parametrize("name", GPU_ONLY)
def test_gpu_config_parses(name: str, workdir: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *config_args(name, workdir), "--print_config")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed


def hooks_the_process(name: str) -> bool:
    """Whether a config's run takes over its process's output (W&B): such a config runs in
    a process of its own, in the test of its leaf (tests/test_trackers.py)."""
    return "WandbLogger" in (CONFIGS / name).read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [name for name in ALL if not needed_gpus(name) and not hooks_the_process(name)]
)
def test_config_runs_fast(name: str, workdir: Path):
    # The fast overrides first, the config's own preparation after: log-lines.yaml is a
    # progress display, which needs the progress bar FAST turns off.
    configs = [*base_of(name), "--config", f"configs/{name}"]
    prepared = config_args(name, workdir)[len(configs) :]
    cli = run_cli("fit", *configs, *FAST, *prepared)
    # The deterministic preset switches this on for the whole process.
    torch.use_deterministic_algorithms(False)
    assert cli.trainer.state.finished, f"{name}: fit did not finish"
    assert cli.trainer.global_step > 0
    # Runs are logged under the experiment's file name (presets keep the default's).
    expected = "default" if name.startswith("presets/") else Path(name).stem
    if not cli.trainer.fast_dev_run:  # which logs nothing
        assert cli.trainer.logger.name == expected
    # Its checkpoint names only trusted classes, so Python loads it back as it is.
    last = cli.trainer.checkpoint_callback and cli.trainer.checkpoint_callback.last_model_path
    if last:
        loaded = type(cli.model).load_from_checkpoint(last)
        assert type(loaded.net) is type(cli.model.net)
        assert loaded.class_names == cli.model.class_names
        state = loaded.state_dict()
        for key, value in cli.model.state_dict().items():
            assert torch.equal(state[key], value), f"{name}: {key}"


EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_says_how_to_run_it(name: str):
    # The header's command is what the tests run (experiment() stacks overlays on the default).
    text = (CONFIGS / "experiments" / f"{name}.yaml").read_text()
    command = "python -m project fit " + " ".join(experiment(name))
    assert command in text, f"{name}.yaml: its first lines should show `{command}`"


def _all_configs() -> dict[str, dict]:
    return {name: yaml_load(name) or {} for name in ALL}


def test_overlays_hold_only_what_differs_from_the_base():
    base = yaml_load("base.yaml")["trainer"]
    for name, config in _all_configs().items():
        if name == "base.yaml":
            continue
        trainer = config.get("trainer") or {}
        # The log folder is named after the file: no config retypes it. The logger
        # presets choose another logger, and leave the name to the CLI too.
        if name.startswith("presets/logger-"):
            assert (
                "name: null" in (CONFIGS / name).read_text()
                or "project: null" in (CONFIGS / name).read_text()
            ), f"{name}: the CLI names the run"
        else:
            assert "logger" not in trainer, f"{name} sets trainer.logger; base.yaml has it"
        for key in ("accelerator", "devices", "precision", "plugins"):
            if name.startswith("presets/"):
                continue  # presets exist to change exactly these
            assert trainer.get(key, base.get(key)) == base.get(key), f"{name} repeats {key}"
        listed = [c.get("class_path", "") for c in trainer.get("callbacks") or []]
        assert not listed, f"{name}: `callbacks:` replaces base.yaml's list; use `callbacks+:`"


def test_no_config_sets_a_value_the_run_ignores():
    for name, config in _all_configs().items():
        init = (config.get("model") or {}).get("init_args") or {}
        scheduler = (init.get("scheduler") or {}).get("class_path", "")
        optimizer = (init.get("optimizer") or {}).get("init_args") or {}
        if scheduler.endswith("OneCycleLR"):
            assert "lr" not in optimizer, f"{name}: OneCycleLR sets lr from max_lr every step"


def yaml_load(name: str) -> dict:
    import yaml

    return yaml.safe_load((CONFIGS / name).read_text())


# The configs that start from another run's checkpoint, each with the config that writes it.
NEEDING = {
    path.stem: match[1]
    for path in sorted((CONFIGS / "experiments").glob("*.yaml"))
    if (
        match := re.match(r"# Needs: configs/experiments/(.+)\.yaml, run first\.", path.read_text())
    )
}


def test_the_configs_that_start_from_another_run_say_so_on_their_first_line():
    for path in sorted((CONFIGS / "experiments").glob("*.yaml")):
        if re.search(r"(init_from|teacher_checkpoint): logs/", path.read_text()):
            assert path.stem in NEEDING, f"{path.name} does not name the config to run first"


@pytest.mark.parametrize(("needing", "first"), sorted(NEEDING.items()))
def test_a_config_that_needs_another_run_names_it(needing, first, workdir, capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", *experiment(needing), *FAST)
    error = capsys.readouterr().err
    assert f"run configs/experiments/{first}.yaml first" in error
    assert len(error.strip().splitlines()) == 2  # the line, and where --help is
