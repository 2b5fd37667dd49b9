"""Start-up: how long the command line takes before it does anything.

``python -m project --help`` and ``python -m project fit --config
configs/default.yaml --print_config`` against the imports every Lightning
script pays, ``python -c "import lightning.pytorch, torchvision"``. Each
command runs in a fresh process, alternately, several times; the table gives
the median. When the project adds more than the goal, the modules it imports
beyond the baseline (``python -X importtime``) are listed by cost.

What the project adds is timed inside its process: the project's commands run
as ``python -c`` programs that first import what the baseline imports, note the
time, then run ``project.__main__`` with the same arguments; an ``atexit``
handler reports the time since. Taking the difference of the two wall times
instead subtracts two 10-second figures that each vary by a second from run to
run on a small virtual machine; the table shows both.

    python -m benchmarks.startup [--repeats 7] [--importtime]
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import (
    Row,
    alternate,
    argument_parser,
    child_environment,
    finish,
    median,
    run_measured,
)

GOAL_SECONDS = 0.3
BASELINE = "import lightning.pytorch, torchvision"
# The line the instrumented project commands print at exit: the marker, then
# the wall and CPU seconds since the baseline's imports finished.
AFTER_BASELINE = "startup: after the baseline's imports"


def commands(config: str) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "baseline": [python, "-c", BASELINE],
        "--help": [python, "-m", "project", "--help"],
        "fit --print_config": [
            python,
            *("-m", "project", "fit", "--config", config, "--print_config"),
        ],
    }


def after_baseline_command(command: Sequence[str]) -> list[str]:
    """``python -m project ARGS`` as a program that times what follows the baseline's imports."""
    python, _, module, *args = command
    program = "\n".join(
        [
            "import time",
            BASELINE,
            "begin, begin_cpu = time.perf_counter(), time.process_time()",
            "import atexit, runpy, sys",
            "atexit.register(lambda: print("
            f"{AFTER_BASELINE!r}, time.perf_counter() - begin, time.process_time() - begin_cpu, "
            "file=sys.stderr, flush=True))",
            f"sys.argv = [{module!r}, *{args!r}]",
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
        ]
    )
    return [python, "-c", program]


def after_baseline(output: str) -> tuple[float, float]:
    """``(wall, cpu)`` seconds an instrumented command reported; NaN when it reported none."""
    for line in reversed(output.splitlines()):
        if line.startswith(AFTER_BASELINE):
            wall, cpu = line[len(AFTER_BASELINE) :].split()
            return float(wall), float(cpu)
    return math.nan, math.nan


def import_times(report: str) -> dict[str, int]:
    """Self time in microseconds of each module in ``python -X importtime`` output."""
    times = {}
    for line in report.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.split(":", 1)[1].split("|")
        times[name.strip()] = int(self_us)
    return times


def extra_imports(ours: str, baseline: str, top: int = 8) -> list[tuple[str, float]]:
    """``(package, milliseconds)`` of what the project imports beyond the baseline, costliest first.

    Modules are grouped by top-level package; the project's own modules and
    sub-packages of the baseline's packages (``torchvision.transforms.v2``) are
    grouped by their first two name parts, which is where a lazy import would go.
    """
    base = import_times(baseline)
    base_packages = {name.split(".")[0] for name in base}
    grouped: dict[str, float] = defaultdict(float)
    for name, micros in import_times(ours).items():
        if name in base:
            continue
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] in base_packages | {"project"} else parts[0]
        grouped[key] += micros / 1000
    return sorted(grouped.items(), key=lambda item: -item[1])[:top]


def import_report(config: str, name: str) -> str:
    """The costliest imports of command ``name`` beyond the baseline, as one line."""
    env = child_environment()
    runs = commands(config)
    ours = run_measured([runs[name][0], "-X", "importtime", *runs[name][1:]], env=env)
    baseline = run_measured([runs["baseline"][0], "-X", "importtime", "-c", BASELINE], env=env)
    costs = extra_imports(ours.output, baseline.output)
    listed = ", ".join(f"{package} {ms:.0f} ms" for package, ms in costs)
    return f"`{name}` imports beyond the baseline (self time, -X importtime): {listed}"


def measure(config: str, repeats: int, explain: bool | None = None) -> list[Row]:
    """Rows for ``--help`` and ``fit --print_config``.

    Args:
        explain: List the extra imports: always (True), never (False), or when
            the goal is missed (None).
    """
    if not Path(config).is_file():
        raise FileNotFoundError(
            f"{config} not found: run from the repository root or pass --config"
        )
    env = child_environment()
    to_run = {
        name: command if name == "baseline" else after_baseline_command(command)
        for name, command in commands(config).items()
    }
    runs = {
        name: (lambda command=command: run_measured(command, env=env))
        for name, command in to_run.items()
    }
    finished = alternate(runs, repeats)
    times = {name: median([f.seconds for f in done]) for name, done in finished.items()}
    rows = []
    for name in ("--help", "fit --print_config"):
        inside = [after_baseline(f.output) for f in finished[name]]
        added = median([wall for wall, _ in inside])
        added_cpu = median([cpu for _, cpu in inside])
        over = math.isfinite(added) and added > GOAL_SECONDS
        baselines = [f.seconds for f in finished["baseline"]]
        note = (
            f"adds {added:.2f} s after the baseline's imports, timed inside the process "
            f"({added_cpu:.2f} s of CPU time); by wall time against the baseline "
            f"{times[name] - times['baseline']:+.2f} s, with the baseline's own runs "
            f"spread over {min(baselines):.1f}-{max(baselines):.1f} s "
            f"({repeats} alternating runs, median)"
        )
        if explain or (explain is None and over):
            note += "; " + import_report(config, name)
        rows.append(
            Row(
                "start-up",
                f"python -m project {name}",
                "s",
                times[name],
                times["baseline"],
                goal=f"<= +{GOAL_SECONDS:.1f} s",
                met=not over if math.isfinite(added) else None,
                note=note,
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command")
    parser.add_argument(
        "--importtime", action="store_true", help="list the extra imports even within the goal"
    )
    args = parser.parse_args(argv)
    if args.smoke:  # one run each; the import listing only when asked for
        rows = measure(args.config, 1, args.importtime or False)
    else:
        rows = measure(args.config, args.repeats, args.importtime or None)
    finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
