"""Every optional feature is a leaf: deleting its paths leaves the core and the rest working.

The README's "Leaves" section lists, per leaf, the paths to delete. Two checks
stand for deleting them: nothing outside a leaf imports it (at module level) or
names its classes in a config, and the default run (fit, test, predict) and the
collection of every other test work with all leaves' modules blocked from import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FAST, REPO

# Per leaf: its modules, every other path that goes with it, and notebook sections that use it.
LEAVES: dict[str, dict] = {
    "transfer learning": {
        "modules": [
            "project.models.transfer",
            "project.models.backbones",
            "project.callbacks.finetuning",
        ],
        "paths": [
            "configs/experiments/imagefolder-transfer.yaml",
            "configs/experiments/imagefolder-mobilenetv3.yaml",
            "configs/experiments/cifar10-resnet18-finetune.yaml",
            "configs/experiments/digits-5to9-features.yaml",
            "configs/experiments/digits-5to9-finetune.yaml",
            "tests/test_transfer.py",
            "tests/test_memory.py",
            "notebooks/02-transfer-learning.ipynb",
        ],
    },
    "distillation": {
        "modules": ["project.models.distillation", "project.losses.distillation"],
        "paths": [
            "configs/experiments/digits-teacher.yaml",
            "configs/experiments/digits-distillation.yaml",
            "tests/test_distillation.py",
        ],
    },
    "losses": {
        "modules": [
            "project.losses.base",
            "project.losses.cross_entropy",
            "project.losses.focal",
            "project.losses.weighted_sum",
        ],
        "paths": [
            "configs/experiments/longtail-weighted-ce.yaml",
            "configs/experiments/longtail-focal.yaml",
            "tests/test_losses.py",
            "notebooks/03-custom-losses.ipynb",
        ],
    },
    "few labels and long tails": {
        "modules": ["project.data.subsets"],
        "paths": [
            "configs/experiments/digits-5to9-scratch.yaml",
            "configs/experiments/digits-5to9-features.yaml",
            "configs/experiments/digits-5to9-finetune.yaml",
            "configs/experiments/longtail-ce.yaml",
            "configs/experiments/longtail-balanced-sampler.yaml",
            "configs/experiments/longtail-label-smoothing.yaml",
            "configs/experiments/longtail-weighted-ce.yaml",
            "configs/experiments/longtail-focal.yaml",
            "tests/test_subsets.py",
            "configs/overfitting/few-labels.yaml",
            "notebooks/02-transfer-learning.ipynb",
            "notebooks/03-custom-losses.ipynb",
        ],
    },
    "CSV source": {
        "modules": ["project.data.csv"],
        "paths": ["configs/experiments/csv.yaml", "tests/test_csv_source.py"],
    },
    "EMA": {
        "modules": ["project.callbacks.averaging"],
        "paths": ["configs/presets/ema.yaml", "tests/test_ema.py"],
    },
    "finders": {
        "modules": ["project.callbacks.tuning"],
        "paths": [
            "configs/presets/lr-finder.yaml",
            "configs/presets/batch-size-finder.yaml",
            "tests/test_finders.py",
        ],
        "cells": {"notebooks/04-debugging-and-speed.ipynb": "2. Learning-rate finder"},
    },
    "ResNet": {
        "modules": ["project.models.resnet"],
        "paths": [
            "configs/experiments/cifar10-resnet.yaml",
            "configs/experiments/fashion-mnist-best.yaml",
            "tests/test_resnet.py",
            "tests/test_memory.py",
        ],
    },
    "speed callbacks": {
        "modules": ["project.callbacks.speed"],
        "paths": [
            "configs/presets/channels-last.yaml",
            "configs/presets/compile.yaml",
            "configs/experiments/fashion-mnist.yaml",
            "benchmarks/gpu_presets.py",
            "benchmarks/gpu_throughput.py",
            "tests/test_speed.py",
        ],
    },
    "runner": {
        "modules": ["project.runner", "project.search"],
        "paths": [
            "configs/search/default.yaml",
            "tests/test_runner.py",
            "benchmarks/results.py",
            "tests/test_results.py",
        ],
    },
    "SLURM": {
        "modules": ["project.callbacks.requeue"],
        "paths": [
            "configs/presets/slurm.yaml",
            "scripts/slurm.sbatch",
            "tests/test_distributed_slurm.py",
        ],
    },
    "pictures": {
        "modules": ["project.callbacks.images"],
        "paths": ["configs/presets/pictures.yaml", "tests/test_image_grid.py"],
    },
    "log lines": {
        "modules": ["project.callbacks.progress"],
        "paths": ["configs/presets/log-lines.yaml", "tests/test_log_lines.py"],
    },
    "trackers": {
        "modules": [],
        "paths": [
            "configs/presets/logger-csv.yaml",
            "configs/presets/logger-mlflow.yaml",
            "configs/presets/logger-wandb.yaml",
            "tests/test_trackers.py",
        ],
    },
    "diagnostics": {
        "modules": ["project.callbacks.diagnostics"],
        "paths": ["configs/presets/diagnostics.yaml", "tests/test_diagnostics.py"],
    },
    "reports": {
        "modules": ["project.callbacks.reports"],
        "paths": ["configs/presets/reports.yaml", "tests/test_reports.py"],
    },
    "ensembles": {
        "modules": ["project.models.ensemble"],
        "paths": ["configs/presets/ensemble.yaml", "tests/test_ensemble.py"],
    },
    "activation checkpointing": {
        "modules": ["project.models.memory"],
        "paths": ["tests/test_memory.py", "benchmarks/memory.py"],
    },
    "export": {
        "modules": ["project.export", "project.infer", "project.serve"],
        "paths": [
            "tests/test_export.py",
            "tests/test_export_serving.py",
            "benchmarks/inference.py",
        ],
    },
    "torchvision datasets": {
        "modules": ["project.data.torchvision_sources"],
        "paths": [
            "configs/experiments/mnist.yaml",
            "configs/experiments/fashion-mnist.yaml",
            "configs/experiments/fashion-mnist-best.yaml",
            "configs/experiments/cifar10.yaml",
            "configs/experiments/cifar10-resnet.yaml",
            "configs/experiments/cifar10-resnet18-finetune.yaml",
            "tests/test_torchvision_sources.py",
        ],
    },
}


def module_file(module: str) -> str:
    return module.replace(".", "/") + ".py"


def leaf_paths(leaf: str) -> set[str]:
    return {*map(module_file, LEAVES[leaf]["modules"]), *LEAVES[leaf]["paths"]}


def top_level_imports(source: str) -> set[str]:
    """Modules a Python source imports when it is loaded (not inside functions)."""
    found = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def class_paths(node: object) -> set[str]:
    if isinstance(node, dict):
        own = {node["class_path"]} if isinstance(node.get("class_path"), str) else set()
        return own.union(*(class_paths(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(class_paths(value) for value in node))
    return set()


def what_each_file_needs() -> dict[str, set[str]]:
    """Per repository file: the modules it imports at load time, or whose classes it names."""
    needs = {}
    for path in sorted(REPO.glob("*/**/*.py")):
        if ".venv" not in path.parts:
            needs[str(path.relative_to(REPO))] = top_level_imports(path.read_text())
    for path in sorted(REPO.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        needs[str(path.relative_to(REPO))] = set().union(*map(top_level_imports, code))
    for path in sorted(REPO.glob("configs/**/*.yaml")):
        named = class_paths(yaml.safe_load(path.read_text()))
        needs[str(path.relative_to(REPO))] = {name.rpartition(".")[0] for name in named}
    return needs


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_nothing_outside_a_leaf_needs_it(leaf: str):
    modules = LEAVES[leaf]["modules"]
    own = leaf_paths(leaf) | set(LEAVES[leaf].get("cells", {}))
    assert all((REPO / path).exists() for path in own), "a listed path does not exist"
    offenders = [
        f"{path} needs {sorted(m for m in needed if m.startswith(tuple(modules)))}"
        for path, needed in what_each_file_needs().items()
        if path not in own and any(m == leaf or m.startswith(tuple(modules)) for m in needed)
    ]
    assert offenders == []


def test_the_readme_lists_every_leaf_s_paths():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Leaves", 1)[1].split("\n## ", 1)[0]
    for leaf, parts in LEAVES.items():
        line = next(line for line in section.splitlines() if line.startswith(f"- **{leaf}**"))
        for path in sorted(leaf_paths(leaf)):
            assert f"`{path}`" in line, f"{leaf}: {path}"
        for notebook, title in parts.get("cells", {}).items():
            assert f'the `{notebook}` section "{title}"' in line, f"{leaf}: {notebook}"


BLOCKED_RUN = """
import importlib.abc, json, sys
blocked = tuple(json.loads(sys.argv[1]))

class Deleted(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(blocked):
            raise ModuleNotFoundError(f"{name} is deleted", name=name)
        return None

sys.meta_path.insert(0, Deleted())
import pytest
tests = json.loads(sys.argv[2])
collected = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *tests])
from project.cli import main
fast = json.loads(sys.argv[3])
fit = main(["fit", "--config", "configs/default.yaml", *fast])
best = fit.trainer.checkpoint_callback.best_model_path
main(["test", "--config", "configs/default.yaml", *fast, f"--ckpt_path={best}"])
main(["predict", "--config", "configs/default.yaml", *fast, f"--ckpt_path={best}"])
main(["--config", "configs/default.yaml", *fast], run=False)  # as notebooks build it
loaded = sorted(m for m in sys.modules if m.startswith(blocked))
print(json.dumps({"collected": int(collected), "leaf_modules_loaded": loaded}))
"""


@pytest.mark.slow
def test_the_default_run_and_the_other_tests_need_no_leaf(workdir: Path):
    modules = [m for leaf in LEAVES.values() for m in leaf["modules"]]
    leaf_tests = {p for leaf in LEAVES for p in leaf_paths(leaf) if p.startswith("tests/")}
    core_tests = sorted(
        str(REPO / p.relative_to(REPO))
        for p in REPO.glob("tests/test_*.py")
        if str(p.relative_to(REPO)) not in leaf_tests
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKED_RUN,
            json.dumps(modules),
            json.dumps(core_tests),
            json.dumps(FAST),
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"collected": 0, "leaf_modules_loaded": []}
