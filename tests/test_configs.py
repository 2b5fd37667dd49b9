"""Every YAML under configs/ runs in a fast form (and so parses); the GPU ones only parse here.

Experiments run on their own; presets are overlays, so each runs stacked on
the default config, the way the README tells users to use them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, FAST, run_cli
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
    args = []
    if name.startswith("presets/"):
        args += ["--config", "configs/default.yaml"]
    args += ["--config", f"configs/{name}"]
    prepare = preparer_for(name)
    if prepare is not None:
        args += prepare(workdir)
    return args


# A config that runs has parsed; the ones that need GPUs are only parsed here.
GPU_ONLY = [name for name in ALL if needed_gpus(name)]


@pytest.mark.parametrize("name", GPU_ONLY)
def test_gpu_config_parses(name: str, workdir: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *config_args(name, workdir), "--print_config")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_config_runs_fast(name: str, workdir: Path):
    if gpus := needed_gpus(name):
        # Tests hide GPUs (and a multi-process run would re-run pytest):
        # test_gpu_config_parses checks these; benchmarks/gpu_presets.py runs them.
        pytest.skip(f"{name} needs {gpus} CUDA GPU(s): parsed only")
    cli = run_cli("fit", *config_args(name, workdir), *FAST)
    # The deterministic preset switches this on for the whole process.
    torch.use_deterministic_algorithms(False)
    assert cli.trainer.state.finished, f"{name}: fit did not finish"
    assert cli.trainer.global_step > 0
    # Its checkpoint names only trusted classes, so Python loads it back as it is.
    last = cli.trainer.checkpoint_callback and cli.trainer.checkpoint_callback.last_model_path
    if last:
        loaded = type(cli.model).load_from_checkpoint(last)
        assert type(loaded.net) is type(cli.model.net)
        assert loaded.class_names == cli.model.class_names
        state = loaded.state_dict()
        for key, value in cli.model.state_dict().items():
            assert torch.equal(state[key], value), f"{name}: {key}"
