"""What every benchmark script shares: the table row, alternating runs, timed subprocesses.

Every script takes ``--smoke`` (a tiny run that only checks the script works),
``--json PATH`` (its rows, for ``python -m benchmarks`` to merge into one table)
and ``--markdown`` (the table as Markdown, for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import itertools
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]

# Above this one-minute load average, other processes share the cores and a
# timing says more about them than about the code measured.
BUSY_LOAD = 1.5
# The load before any benchmark ran: measured later, it would count our own runs.
# ``python -m benchmarks`` hands its own starting load to the scripts it runs.
LOAD_ENV = "BENCHMARK_LOAD_AT_START"


def load_at_start() -> float | None:
    """The one-minute load average when this benchmark run began (``None`` off Unix)."""
    if LOAD_ENV in os.environ:
        return float(os.environ[LOAD_ENV])
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


STARTING_LOAD = load_at_start()

T = TypeVar("T")


@dataclass
class Row:
    """One line of the table: the template against the plain PyTorch baseline.

    Attributes:
        benchmark: What is measured, e.g. "trainer overhead".
        measure: The quantity and its conditions, e.g. "time per epoch".
        unit: Unit of ``template`` and ``baseline`` ("s", "images/s", "MiB").
        template: The project's figure.
        baseline: The plain PyTorch figure, measured in the same run.
        goal: The target in words, e.g. "<= 1.05x"; empty when there is none.
        met: Whether the goal is met; ``None`` when there is no goal or no figure.
        note: A short remark shown under the table (what differs, what it costs).
    """

    benchmark: str
    measure: str
    unit: str
    template: float
    baseline: float
    goal: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        """``template / baseline``; NaN when either is missing or the baseline is zero."""
        if not (math.isfinite(self.template) and math.isfinite(self.baseline)) or not self.baseline:
            return math.nan
        return self.template / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        """A row from ``to_dict`` output; ``ratio`` and unknown keys are ignored."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name in ("template", "baseline"):
            known[name] = math.nan if known.get(name) is None else float(known[name])
        return cls(**known)


@dataclass
class Report:
    """Rows plus the machine they were measured on."""

    rows: list[Row] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)


def machine_facts() -> dict[str, Any]:
    """Where the figures come from: host, CPUs, load, library versions, GPU if any."""
    import torch

    facts: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1min": None if STARTING_LOAD is None else round(STARTING_LOAD, 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device_name(),
    }
    try:
        import lightning

        facts["lightning"] = lightning.__version__
    except ImportError:
        pass
    return facts


def device_name() -> str:
    """The CUDA device's name, or the CPU's model when there is no GPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"


def busy_warning(load: float | None) -> str | None:
    """A warning when the machine was loaded enough to make timings meaningless."""
    if load is None or load <= BUSY_LOAD:
        return None
    return (
        f"warning: load average {load:.1f} (above {BUSY_LOAD}): other processes share the "
        "CPUs, so these timings are not meaningful; rerun on a quiet machine"
    )


# -- running things --------------------------------------------------------------------


def alternate(runs: dict[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Calls every run once per round, reversing the order every other round.

    Drift on the machine (thermal throttling, a background job) then lands on
    every side instead of on whichever ran last. Each run starts after a full
    garbage collection: a full collection walks every live object (half a
    million after importing Lightning, 0.4 s on this machine's CPU), and one
    left due by the previous run's garbage would land in the next run's time.
    """
    results: dict[str, list[T]] = {name: [] for name in runs}
    names = list(runs)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            gc.collect()
            results[name].append(runs[name]())
    return results


def median(values: Sequence[float]) -> float:
    """Median of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


@dataclass
class Finished:
    """A subprocess that ran to the end: wall time from launch, peak memory, output."""

    started: float
    seconds: float
    peak_rss_mib: float
    returncode: int
    output: str


def run_measured(
    command: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> Finished:
    """Runs ``command`` to completion; measures its wall time and its peak resident memory.

    The peak comes from the kernel's accounting of that one child (``wait4``),
    not from sampling, so short peaks are not missed. Output goes to a file,
    not a pipe, so a chatty child never blocks on a full pipe while we wait.

    Raises:
        RuntimeError: The command failed; the message holds the end of its output.
    """
    with tempfile.TemporaryFile("w+") as log:
        started = time.time()
        begin = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - begin
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    # Linux counts ru_maxrss in KiB, macOS in bytes.
    peak = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    if process.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(
            f"`{' '.join(command)}` exited with {process.returncode}; its output ends:\n{tail}"
        )
    return Finished(started, seconds, peak, process.returncode, output)


def child_environment() -> dict[str, str]:
    """This process's environment with the repository importable (``benchmarks``, ``project``)."""
    env = dict(os.environ)
    paths = [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if STARTING_LOAD is not None:
        env[LOAD_ENV] = str(STARTING_LOAD)
    return env


# -- the project's objects -------------------------------------------------------------


def build_cli(config: str, overrides: Sequence[str] = ()) -> Any:
    """The config's model, data and trainer, built as ``fit`` builds them, but not run."""
    from project.cli import main

    return main(["--config", config, *overrides], run=False)


class EpochClock(Callback):
    """Stamps ``time.perf_counter()`` at the start of every training epoch and when training ends.

    Two consecutive stamps bound one epoch: its training steps, its validation,
    its checkpoints and its logging, as a plain loop's epoch does. Given
    ``clock`` (a path), :meth:`record` is written there as JSON when training
    ends, for a fit that runs in another process.
    """

    def __init__(self, clock: str | None = None) -> None:
        self.clock = None if clock is None else Path(clock)
        self.stamps: list[float] = []

    @property
    def epoch_seconds(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.stamps)]

    def record(self) -> dict[str, Any]:
        """What goes to ``clock``; subclasses add their own entries."""
        return {"epoch_seconds": self.epoch_seconds}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.stamps.append(time.perf_counter())
        if self.clock is not None and trainer.is_global_zero:
            self.clock.write_text(json.dumps(self.record()))


# -- the command line and the table ----------------------------------------------------


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keeps Lightning's start-up messages (devices, model summary, tips) off the table.

    The loggers get their levels back on leaving, so a script's ``main`` called
    from Python (the tests, a notebook) leaves Lightning's logging as it was.
    """
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def argument_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny run that checks the script works"
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser


def finish(rows: list[Row], args: argparse.Namespace) -> Report:
    """Prints the table of ``rows`` and writes them to ``--json`` when asked."""
    report = Report(rows, machine_facts())
    if args.json is not None:
        write_report(report, args.json)
    # Run as ``python -m benchmarks.<script>``, argv[0] is the script's file.
    command = " ".join(["python -m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    print(format_report(report, markdown=args.markdown, command=command))
    return report


def write_report(report: Report, path: Path) -> None:
    # NaN is not JSON: a missing figure is written as null.
    rows = [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in (row.to_dict() for row in report.rows)
    ]
    path.write_text(json.dumps({"machine": report.machine, "rows": rows}, indent=2) + "\n")


def read_report(path: Path) -> Report:
    data = json.loads(path.read_text())
    return Report([Row.from_dict(row) for row in data["rows"]], data.get("machine", {}))


def format_value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def format_report(report: Report, markdown: bool = False, command: str | None = None) -> str:
    """The table, its notes and the machine it ran on, as plain text or Markdown."""
    header = ("benchmark", "measure", "template", "baseline", "ratio", "goal", "met")
    body = []
    notes = []
    for row in report.rows:
        mark = ""
        if row.note:
            notes.append(row.note)
            mark = f" [{len(notes)}]"
        met = {True: "yes", False: "NO", None: ""}[row.met]
        ratio = f"{row.ratio:.3f}x" if math.isfinite(row.ratio) else "-"
        body.append(
            (
                row.benchmark,
                row.measure + mark,
                format_value(row.template, row.unit),
                format_value(row.baseline, row.unit),
                ratio,
                row.goal,
                met,
            )
        )
    machine = report.machine
    where = ", ".join(
        f"{key} {machine[key]}"
        for key in ("date", "device", "cpus", "load_average_1min", "torch", "lightning")
        if machine.get(key) is not None
    )
    lines = []
    if markdown:
        if command:
            lines.append(f"Command: `{command}`  ")
        lines += [f"Machine: {where}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines.append("")
        lines += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    else:
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for cells in [header, tuple("-" * w for w in widths), *body]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        lines.append("")
        lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
        lines.append(f"ratio = template / baseline. Measured on: {where}")
    warning = busy_warning(machine.get("load_average_1min"))
    if warning:
        lines.append(warning)
    return "\n".join(lines)
