"""Every optional feature is a leaf: deleting its paths leaves the core and the rest working.

The README's "Leaves" section lists, per leaf, the paths to delete. Two checks
stand for deleting them: nothing outside a leaf imports it (at module level) or
names its classes in a config, and the default run (fit, test, predict) and the
collection of every other test work with all leaves' modules blocked from import.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FAST, REPO

from project.leaves import read, readme_line

LEAVES, TEMPLATE_ONLY = read()


def leaf_paths(leaf: str) -> set[str]:
    return LEAVES[leaf].files()


def needing(leaf: str) -> set[str]:
    """The paths of the leaves that need ``leaf`` (they may use it, and go when it goes)."""
    found, todo = set(), [leaf]
    while todo:
        name = todo.pop()
        for other in LEAVES.values():
            if name in other.needs and other.name not in found:
                found.add(other.name)
                todo.append(other.name)
    return set().union(*(leaf_paths(name) for name in found))


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


@functools.cache  # one scan of the tree for every leaf's check
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
    modules = LEAVES[leaf].modules
    own = leaf_paths(leaf) | set(LEAVES[leaf].cells) | needing(leaf)
    assert all((REPO / path).exists() for path in own), "a listed path does not exist"
    offenders = [
        f"{path} needs {sorted(m for m in needed if m.startswith(tuple(modules)))}"
        for path, needed in what_each_file_needs().items()
        if path not in own and any(m == leaf or m.startswith(tuple(modules)) for m in needed)
    ]
    assert offenders == []


def test_no_file_outside_a_leaf_runs_its_configs():
    """A test, benchmark or config of the core that runs a leaf's config by its name."""
    offenders = []
    for leaf in LEAVES.values():
        configs = [Path(p) for p in leaf_paths(leaf.name) if p.startswith("configs/")]
        own = leaf_paths(leaf.name) | needing(leaf.name)
        named = [
            pattern
            for config in configs
            for pattern in (
                str(config),
                f'preset("{config.stem}")' if config.parent.name == "presets" else str(config),
                f'experiment("{config.stem}")' if config.parent.name == "experiments" else "",
            )
            if pattern
        ]
        for path in [
            *REPO.glob("tests/*.py"),
            *REPO.glob("benchmarks/*.py"),
            *REPO.glob("Makefile"),
        ]:
            relative = str(path.relative_to(REPO))
            if relative not in own | set(TEMPLATE_ONLY):  # the starter's tests name leaves
                text = path.read_text()
                offenders += [f"{relative}: {n} ({leaf.name})" for n in named if n in text]
    assert offenders == []


def test_the_readme_lists_every_leaf_s_paths():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Leaves", 1)[1].split("\n## ", 1)[0]
    listed = [line for line in section.splitlines() if line.startswith("- **")]
    assert listed == [readme_line(leaf) for leaf in LEAVES.values()]


def test_a_leaf_needs_only_leaves_and_the_template_s_own_paths_exist():
    assert all(need in LEAVES for leaf in LEAVES.values() for need in leaf.needs)
    assert all((REPO / path).is_file() for path in TEMPLATE_ONLY)


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
    modules = [m for leaf in LEAVES.values() for m in leaf.modules]
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
