"""``python -m benchmarks``: runs every benchmark script and prints one table of ratios.

    python -m benchmarks                        # all scripts; the GPU ones where CUDA is
    python -m benchmarks --only overhead startup
    python -m benchmarks --smoke                # tiny runs: checks that every script works
    python -m benchmarks --markdown --json bench.json   # the table for docs/benchmarks.md

Each script runs in its own process (``python -m benchmarks.<name> --json
FILE``), so one benchmark's imports, threads and memory never colour
another's. Run it from the repository root on a quiet machine: every figure is
a ratio against plain PyTorch measured in the same run, but a loaded machine
still blurs them (the table warns when the load average is high).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import (
    Report,
    Row,
    child_environment,
    format_report,
    machine_facts,
    read_report,
    run_measured,
    write_report,
)

HERE = Path(__file__).resolve().parent
# Every benchmark script, in the order the table lists them, and whether it needs CUDA.
SCRIPTS: dict[str, bool] = {
    "overhead": False,
    "startup": False,
    "time_to_accuracy": False,
    "dataloading": False,
    "gpu_throughput": True,
    "gpu_presets": True,
}
# Modules here that are not benchmarks themselves.
SUPPORT = {"__init__", "__main__", "harness", "plain_loop"}
# Benchmarks run on their own, not by ``make bench``: long (cpu_presets' baseline is
# the default config; large_folder writes 70,000 files first; results trains every
# config of the README's tables five times; inference needs the [export] and [serve] extras).
STANDALONE = {"cpu_presets", "inference", "large_folder", "memory", "results"}


@dataclass
class ScriptResult:
    """What one script gave: its rows, or why there are none."""

    name: str
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    problem: str = ""
    output: str = ""


def run_script(module: str, smoke: bool, workdir: Path) -> ScriptResult:
    """Runs ``python -m MODULE --json FILE [--smoke]`` and reads the rows it wrote."""
    table = workdir / f"{module}.json"
    command = [sys.executable, "-m", module, "--json", str(table), *(["--smoke"] if smoke else [])]
    try:
        finished = run_measured(command, env=child_environment())
    except RuntimeError as error:
        return ScriptResult(module, problem=str(error))
    if not table.is_file():
        return ScriptResult(
            module,
            seconds=finished.seconds,
            problem=f"{module} wrote no rows to --json; its own output follows",
            output=finished.output,
        )
    return ScriptResult(module, read_report(table).rows, finished.seconds)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", nargs="+", choices=list(SCRIPTS), help="run just these")
    parser.add_argument("--smoke", action="store_true", help="tiny runs that check the scripts")
    parser.add_argument("--json", type=Path, help="also write the merged rows to this file")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    # The GPU scripts' --smoke runs on a CPU; their real runs need CUDA.
    has_cuda = args.smoke or cuda_available()
    results: list[ScriptResult] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(SCRIPTS):
            if not (HERE / f"{name}.py").is_file():
                skipped.append(f"{name}: benchmarks/{name}.py does not exist")
                continue
            if SCRIPTS[name] and not has_cuda:
                skipped.append(f"{name}: needs a CUDA device")
                continue
            print(f"running benchmarks/{name}.py ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            result = run_script(f"benchmarks.{name}", args.smoke, Path(tmp))
            state = "failed" if result.problem and not result.output else "done"
            print(f"  {state} in {time.perf_counter() - began:.0f} s", file=sys.stderr)
            results.append(result)
    report = Report([row for result in results for row in result.rows], machine_facts())
    if args.json is not None:
        write_report(report, args.json)
    command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
    print(format_report(report, markdown=args.markdown, command=command))
    for line in skipped:
        print(f"skipped {line}")
    failed = [result for result in results if result.problem]
    for result in failed:
        print(f"\n{result.problem}")
        if result.output:
            print(result.output.rstrip())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
