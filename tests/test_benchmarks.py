"""The benchmark scripts run and print their table of ratios.

Each script runs at its ``--smoke`` size: these tests check that the scripts
work and that every ratio is a number, never how fast anything is.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

# benchmarks/ is not an installed package; it is imported from the checkout.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import __main__ as runner
from benchmarks import (
    cpu_presets,
    large_folder,
    overhead,
    startup,
    time_to_accuracy,
)
from benchmarks.harness import Report, Row, format_report


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One thread per process: on a shared machine, more threads only wait for each other."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_table(rows: list[Row], printed: str, benchmark: str, count: int) -> None:
    assert len(rows) == count
    for row in rows:
        assert row.benchmark == benchmark
        assert math.isfinite(row.ratio) and row.ratio > 0, f"{row.measure}: ratio {row.ratio}"
        assert row.measure.split(" [")[0] in printed
    assert f"{rows[0].ratio:.3f}x" in printed


@pytest.mark.slow
def test_overhead_prints_epoch_time_ratio(workdir: Path, capsys: pytest.CaptureFixture):
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    rows = overhead.main(["--smoke"])
    # Quieted for the table only: the caller's logging is left as it was.
    assert lightning_logger.level == level
    assert_table(rows, capsys.readouterr().out, "trainer overhead", 3)
    assert rows[0].goal == "<= 1.05x" and rows[0].met is not None
    assert "3 training steps" in rows[0].note
    # The third row splits the first: Lightning's loop alone against the plain loop.
    assert rows[2].measure.startswith("Lightning alone") and "Lightning's loop adds" in rows[2].note


@pytest.mark.slow  # runs processes
def test_startup_prints_added_seconds(workdir: Path, capsys: pytest.CaptureFixture):
    rows = startup.main(["--smoke"])
    assert_table(rows, capsys.readouterr().out, "start-up", 2)
    assert [row.measure for row in rows] == [
        "python -m project --help",
        "python -m project fit --print_config",
    ]
    assert all("adds" in row.note for row in rows)
    # Judged on the time the commands reported from inside: absent, there is no verdict.
    assert all(row.met is not None for row in rows)


def test_startup_reads_the_time_reported_after_the_baseline_imports():
    output = f"usage: ...\n{startup.AFTER_BASELINE} 0.25 0.2\n"
    assert startup.after_baseline(output) == (0.25, 0.2)
    assert all(math.isnan(value) for value in startup.after_baseline("usage: ...\n"))


def test_startup_lists_the_costliest_extra_imports():
    def report(*modules: tuple[str, int]) -> str:
        lines = ["import time: self [us] | cumulative | imported package"]
        return "\n".join([*lines, *(f"import time: {us:>9} | {us:>10} | {m}" for m, us in modules)])

    baseline = report(("torch", 900_000), ("torchvision", 100_000), ("lightning", 50_000))
    ours = report(
        ("torch", 950_000),  # the baseline imports it too: not the project's cost
        ("jsonargparse", 3_000),
        ("jsonargparse._core", 2_000),
        ("project.data.files", 1_000),
        ("project.data", 500),
        ("torchvision.transforms.v2._geometry", 4_000),
        ("torchvision.transforms.v2", 1_000),
    )
    assert startup.extra_imports(ours, baseline) == [
        ("jsonargparse", 5.0),
        ("torchvision.transforms", 5.0),
        ("project.data", 1.5),
    ]


@pytest.mark.slow  # runs processes
def test_time_to_accuracy_runs_both_sides(workdir: Path, capsys: pytest.CaptureFixture):
    rows = time_to_accuracy.main(["--smoke"])
    printed = capsys.readouterr().out
    assert [row.benchmark for row in rows] == ["time to accuracy"] * 2 + ["peak memory"]
    for row in rows:
        assert math.isfinite(row.ratio) and row.ratio > 0, f"{row.measure}: ratio {row.ratio}"
    assert "after 1 epochs, the plain loop after 1" in rows[0].note
    # A Python process with torch loaded holds well over 100 MiB.
    assert rows[2].template > 100 and rows[2].baseline > 100
    assert "peak RSS" in printed


@pytest.mark.slow  # runs processes
def test_cpu_presets_compares_a_preset_with_the_default(
    workdir: Path, capsys: pytest.CaptureFixture
):
    # log-lines brings its own progress bar, which the other runs turn off.
    rows = cpu_presets.main(["--smoke", "--only", "deterministic", "log-lines"])
    printed = capsys.readouterr().out
    assert [row.benchmark for row in rows] == ["preset deterministic", "preset log-lines"]
    for row in rows:
        assert_table([row], printed, row.benchmark, 1)
    assert "peak RSS" in rows[0].note and "test accuracy" in rows[0].note


def test_cpu_presets_lists_the_presets_that_run_here():
    names = cpu_presets.cpu_presets()
    assert {"deterministic", "ddp-cpu", "bf16-mixed-cpu"} <= set(names)
    assert not {"gpu", "ddp", "fsdp", "16-mixed", "overfit", "ensemble"} & set(names)


def test_large_folder_measures_every_side(tmp_path: Path, capsys: pytest.CaptureFixture):
    # In this process and at toy size; the script runs each side in a process of its own.
    folder = large_folder.write_folder(tmp_path / "images", 140, workers=1)
    assert len(list((folder / "train").rglob("*.png"))) == 120
    assert len(list((folder / "test").rglob("*.png"))) == 20
    results = {side: large_folder.run_side(side, folder, 0, 2) for side in large_folder.SIDES}
    assert results["template-cache"]["cache_bytes_per_image"] == 28 * 28
    rows = large_folder.rows_from(results, 140, 0)
    report = format_report(Report(rows, {}))
    assert_table(rows, report, "large folder", 8)


def test_runner_knows_every_script():
    scripts = {path.stem for path in (REPO / "benchmarks").glob("*.py")}
    scripts -= runner.SUPPORT | runner.STANDALONE
    assert scripts <= set(runner.SCRIPTS), f"add {scripts - set(runner.SCRIPTS)} to SCRIPTS"


@pytest.mark.slow  # runs processes
def test_runner_reads_rows_and_reports_a_script_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rows.py").write_text(
        "from benchmarks.harness import Row, argument_parser, finish\n"
        "args = argument_parser('fake').parse_args()\n"
        "finish([Row('fake', 'speed', 's', 2.0, 1.0, goal='<= 1.5x', met=False)], args)\n"
    )
    (package / "text.py").write_text("import sys\nprint('only text', sys.argv[1:])\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with_rows = runner.run_script("fakebench.rows", smoke=True, workdir=tmp_path)
    assert with_rows.problem == ""
    assert [(r.measure, r.ratio, r.met) for r in with_rows.rows] == [("speed", 2.0, False)]
    without = runner.run_script("fakebench.text", smoke=True, workdir=tmp_path)
    assert without.rows == [] and "wrote no rows" in without.problem
    assert "only text" in without.output and "--smoke" in without.output


def test_runner_merges_scripts_into_one_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    def fake_run(module: str, smoke: bool, workdir: Path) -> runner.ScriptResult:
        if module == "benchmarks.startup":
            return runner.ScriptResult(module, problem="`python -m project --help` exited with 1")
        row = Row(module.split(".")[1], "speed", "s", 3.0, 2.0)
        return runner.ScriptResult(module, [row])

    monkeypatch.setattr(runner, "run_script", fake_run)
    monkeypatch.setattr(runner, "cuda_available", lambda: False)
    monkeypatch.setitem(runner.SCRIPTS, "time_to_accuracy", True)  # as if it needed CUDA
    code = runner.main(["--only", "overhead", "startup", "dataloading", "time_to_accuracy"])
    printed = capsys.readouterr().out
    assert code == 1  # a script failed
    table = printed.split("ratio = template / baseline")[0]
    assert "overhead" in table and "dataloading" in table and table.count("1.500x") == 2
    assert "skipped time_to_accuracy: needs a CUDA device" in printed
    assert "`python -m project --help` exited with 1" in printed


def test_markdown_table_names_the_machine_and_the_command():
    report = Report(
        [Row("trainer overhead", "time per epoch", "s", 0.21, 0.2, "<= 1.05x", True, "why")],
        {"date": "2026-01-01", "device": "CPU: test", "cpus": 2, "load_average_1min": 3.0},
    )
    text = format_report(report, markdown=True, command="python -m benchmarks")
    assert "| trainer overhead | time per epoch [1] | 0.210 s | 0.200 s | 1.050x |" in text
    assert "Command: `python -m benchmarks`" in text and "CPU: test" in text
    assert "1. why" in text
    assert "load average 3.0" in text  # a busy machine is flagged
