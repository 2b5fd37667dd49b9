"""The leaves: reading ``leaves.yaml``, the one list of the features beyond the core.

A leaf is a feature a user can delete: its modules, and the configs, tests,
notebooks and docs that go with it. ``tests/test_leaves.py`` checks that
nothing outside a leaf needs it; the README's "Leaves" section holds one line
per leaf, written by :func:`readme_line`; the template's starter copies a
project with only the leaves a user keeps. None of this is on a run's path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LEAVES_FILE = "leaves.yaml"


@dataclass(frozen=True)
class Leaf:
    """One leaf as ``leaves.yaml`` lists it."""

    name: str
    modules: list[str]
    paths: list[str]
    cells: dict[str, str] = field(default_factory=dict)
    extras: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    note: str = ""

    def module_files(self) -> list[str]:
        return [module.replace(".", "/") + ".py" for module in self.modules]

    def files(self, root: Path = REPO) -> set[str]:
        """Every file of the leaf under ``root``: its modules, and its paths (folders expanded)."""
        found = set(self.module_files())
        for path in self.paths:
            if path.endswith("/"):
                found |= {str(p.relative_to(root)) for p in (root / path).rglob("*") if p.is_file()}
            else:
                found.add(path)
        return found


def read(root: Path = REPO) -> tuple[dict[str, Leaf], list[str]]:
    """The leaves by name, and the paths that only the template has."""
    document = yaml.safe_load((root / LEAVES_FILE).read_text())
    leaves = {name: Leaf(name=name, **parts) for name, parts in document["leaves"].items()}
    return leaves, list(document.get("template") or [])


def readme_line(leaf: Leaf) -> str:
    """The README's line for a leaf: its paths to delete, its notebook sections, its note."""
    listed = ", ".join(f"`{path}`" for path in sorted({*leaf.module_files(), *leaf.paths}))
    for notebook, title in leaf.cells.items():
        listed += f', and the `{notebook}` section "{title}"'
    note = f" ({leaf.note})" if leaf.note else ""
    return f"- **{leaf.name}**: {listed}{note}."


def document(kept: dict[str, Leaf], files: set[str]) -> str:
    """The new project's ``leaves.yaml``: the leaves kept, with the paths that came along."""
    header = (REPO / LEAVES_FILE).read_text().split("\nleaves:", 1)[0]
    document = {}
    for leaf in kept.values():
        entry = {
            "modules": leaf.modules,
            "paths": [
                path
                for path in leaf.paths
                if path in files or (path.endswith("/") and any(f.startswith(path) for f in files))
            ],
        }
        for key in ("cells", "extras", "requirements", "needs", "note"):
            if getattr(leaf, key):
                entry[key] = getattr(leaf, key)
        document[leaf.name] = entry
    body = yaml.safe_dump({"leaves": document}, sort_keys=False, width=100, allow_unicode=True)
    return f"{header}\n{body}"


def rewrite_readme(
    readme: str, kept: dict[str, Leaf], files: set[str], package: str, name: str
) -> str:
    """The README with its "Leaves" lines for the leaves kept, listing the paths that came."""
    head, found, rest = readme.partition("\n## Leaves")
    if not found:
        return readme
    section, next_heading, tail = rest.partition("\n## ")
    lines = []
    for line in section.splitlines(keepends=True):
        if line.startswith("- **"):
            leaf = kept.get(line.split("**")[1])
            if leaf is None:
                continue
            present = [p for p in leaf.paths if p in files or any(f.startswith(p) for f in files)]
            renamed = replace(  # renamed first: the line lists its paths in sorted order
                leaf,
                modules=[re.sub(rf"^{package}\.", f"{name}.", m) for m in leaf.modules],
                paths=[re.sub(rf"^{package}/", f"{name}/", p) for p in present],
            )
            line = readme_line(renamed) + "\n"
        lines.append(line)
    return head + found + "".join(lines) + next_heading + tail
