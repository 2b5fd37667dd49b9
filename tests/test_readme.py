"""Every ``python -m project`` command in the README runs as written (in a fast form).

Commands run in-process with the tests' fast trainer overrides appended. A
command that needs a GPU, or starts DDP processes, is checked with
``--print_config`` only. ``data/my-images`` (the README's example of a user's
folder) is made from three digit classes as RGB JPEGs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import FAST, REPO, run_cli
from fakes import preparer_for

README = (REPO / "README.md").read_text()
COMMANDS = [
    line.split("#")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    for line in block.splitlines()
    if line.startswith("python -m project ")
]
RUNNER_COMMANDS = [
    line.strip()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    for line in block.splitlines()
    if line.startswith("python -m project.runner ")
]
# The runner's commands run with one seed, two folds or one trial.
FEWER = {"--seeds": "0", "--folds": "2", "--trials": "1"}
# GPU commands cannot run here; DDP re-launches the command line, which inside
# pytest is pytest itself (tests/test_presets.py runs DDP on CPU in a subprocess).
PARSE_ONLY = ("accelerator gpu", "presets/gpu.yaml", "ddp", "fsdp")


def make_user_folder(root: Path, digits: Path) -> None:
    from torchvision.io import decode_image, write_jpeg

    for name in ("3", "5", "8"):
        (root / name).mkdir(parents=True)
        for source in sorted((digits / name).glob("*.png"))[:40]:
            image = decode_image(str(source)).expand(3, -1, -1).contiguous()
            write_jpeg(image, str(root / name / f"{source.stem}.jpg"))


def test_readme_has_commands():
    assert len(COMMANDS) >= 8
    assert RUNNER_COMMANDS or not (REPO / "project" / "runner.py").exists()
    assert README.lstrip().startswith("#")
    assert "make fit" in README.split("\n## ")[0] and "make test" in README.split("\n## ")[0]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command: str, workdir: Path, digits_tree: Path):
    make_user_folder(workdir / "data" / "my-images", digits_tree)
    args = shlex.split(command)[3:]
    if any(marker in command for marker in PARSE_ONLY):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(*args, "--print_config")
        assert exit_info.value.code == 0
        return
    if "--ckpt_path" in args:
        # best/last refer to an earlier run of the same config: make one.
        config = args[args.index("--config") + 1]
        run_cli("fit", "--config", config, *FAST)
    given = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]
    for preset in [name for name in given if name.startswith("configs/presets/")]:
        # A preset that reads earlier runs' checkpoints (ensemble.yaml) gets stand-ins.
        if prepare := preparer_for(preset.removeprefix("configs/")):
            prepare(workdir)
    cli = run_cli(*args, *FAST)
    assert cli.trainer.state.finished


def fewer_runs(args: list[str]) -> list[str]:
    """``args`` with the count of seeds, folds or trials cut to ``FEWER``'s."""
    shorter, skipping = [], False
    for arg in args:
        if skipping and not arg.startswith("--"):
            continue
        skipping = arg in FEWER
        shorter += [arg, FEWER[arg]] if skipping else [arg]
    return shorter


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNER_COMMANDS)
def test_readme_runner_command_runs(command: str, workdir: Path):
    from project.runner import run

    args = fewer_runs(shlex.split(command)[3:])
    for config in {arg for arg in args if arg.startswith("configs/")}:
        # A config that starts from another run's checkpoint gets a stand-in for it.
        if prepare := preparer_for(config.removeprefix("configs/")):
            prepare(workdir)
    runs = run([*args, *FAST])
    contenders = command.count("--config")
    assert len({r.contender for r in runs}) == contenders
    assert runs and all(r.metrics for r in runs if r.state == "COMPLETE")


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.slow
def test_readme_python_snippets_run_as_written(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    assert len(PYTHON_BLOCKS) >= 2
    # The checkpoint a snippet loads, trained enough to know a 3.
    run_cli(
        "fit",
        "--config",
        "configs/default.yaml",
        *FAST,
        "--trainer.max_epochs=5",
        "--trainer.limit_train_batches=1.0",
    )
    printed = []
    for block in PYTHON_BLOCKS:
        # The notebook snippet's five epochs, shortened as every command here is.
        block = block.replace('"--trainer.max_epochs=5"', '"--trainer.max_epochs=1"')
        exec(compile(block, "README.md", "exec"), {})
        printed.append(capsys.readouterr().out.strip())
    # The checkpoint alone, with torchvision.io: a class name and its probability.
    name, probability = printed[0].splitlines()[-1].split()
    assert name == "3" and 0.5 < float(probability) <= 1
