"""Every YAML under configs/ parses and runs in a fast form.

Experiments run on their own; presets are overlays, so each runs stacked on
the default config, the way the README tells users to use them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIGS, FAST, run_cli
from fakes import preparer_for

ALL = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))


def config_args(name: str, workdir: Path) -> list[str]:
    args = []
    if name.startswith("presets/"):
        args += ["--config", "configs/default.yaml"]
    args += ["--config", f"configs/{name}"]
    prepare = preparer_for(name)
    if prepare is not None:
        args += prepare(workdir)
    return args


@pytest.mark.parametrize("name", ALL)
def test_config_parses(name: str, workdir: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *config_args(name, workdir), "--print_config")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed


@pytest.mark.parametrize("name", ALL)
def test_config_runs_fast(name: str, workdir: Path):
    cli = run_cli("fit", *config_args(name, workdir), *FAST)
    assert cli.trainer.state.finished, f"{name}: fit did not finish"
    assert cli.trainer.global_step > 0
