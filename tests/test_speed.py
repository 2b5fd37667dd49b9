"""Speed callbacks (a leaf: project.callbacks.speed) and the GPU benchmarks that measure them.

The channels-last and compile presets themselves run in tests/test_configs.py.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, REPO, preset, run_cli

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from test_benchmarks import assert_table

from benchmarks import gpu_throughput


@pytest.mark.slow
def test_gpu_throughput_smoke_on_cpu(capsys: pytest.CaptureFixture):
    rows = gpu_throughput.main(["--smoke", "--models", "resnet18"])
    assert_table(rows, capsys.readouterr().out, "GPU throughput", 2)
    assert [row.measure for row in rows] == ["resnet18 eager", "resnet18 compiled"]
    assert rows[0].unit == "images/s"


def test_gpu_throughput_refuses_a_real_run_without_cuda(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        gpu_throughput.main([])
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_benchmark_smoke_run_reports_every_variant(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.syspath_prepend(str(REPO))
    benchmark = importlib.import_module("benchmarks.gpu_presets")
    results = benchmark.main(["--smoke"])
    printed = capsys.readouterr().out
    assert [r.name for r in results] == list(benchmark.VARIANTS)
    for result in results:
        assert result.images_per_second > 0, result
        assert result.name in printed
    assert "device:" in printed


@pytest.mark.slow
def test_channels_last_preset_converts_the_convolutions(workdir: Path):
    cli = run_cli("fit", *preset("channels-last"), *FAST, "--test_after_fit=false")
    convs = [m for m in cli.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert cli.trainer.global_step > 0
