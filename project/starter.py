"""Start your own project from this template, with only the leaves you keep.

    python -m project.starter ../my-classifier --name my_classifier --keep "transfer learning" EMA

writes a new project at ``DEST``: the core, the leaves named with ``--keep``
(by the names of the README's "Leaves" section and ``leaves.yaml``, with the
leaves they need) and nothing of the others; the package ``project`` renamed
to ``NAME`` in code, configs, tests, notebooks, ``pyproject.toml`` and the
docs; and a fresh git repository with one commit. What goes with each leaf is
read from ``leaves.yaml``; Markdown between ``<!-- leaf: NAME -->`` and
``<!-- /leaf -->`` goes with that leaf, and between ``<!-- template -->`` and
``<!-- /template -->`` with no starter (it is about the template itself).

A bad name, a ``DEST`` that is not empty or an unknown leaf stops with one
line, before anything is written. The project is built in a temporary folder
beside ``DEST`` and moved there only when it is whole.
"""

from __future__ import annotations

import argparse
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from project import leaves as leaves_file

PACKAGE = (__package__ or __name__).partition(".")[0]
REPO = leaves_file.REPO

MARKER = re.compile(r"^<!-- (leaf: (?P<leaves>[^>]*?)|template) -->\n", re.M)
END = re.compile(r"^<!-- /(leaf|template) -->\n", re.M)
MAX_NAME = 20
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".ipynb", ".cfg", ".txt", ".sbatch", ""}


class StarterError(Exception):
    """A request the starter refuses, with a one-line reason."""


def normalize(name: str) -> str:
    return re.sub(r"[-_\s]+", " ", name).strip().lower()


def chosen_leaves(keep: Sequence[str], leaves: dict[str, leaves_file.Leaf]) -> set[str]:
    """The leaves named (in any case, spaces or hyphens), with every leaf they need."""
    by_name = {normalize(name): name for name in leaves}
    unknown = [name for name in keep if normalize(name) not in by_name]
    if unknown:
        raise StarterError(
            f"unknown leaf {unknown[0]!r}; the leaves are: {', '.join(sorted(leaves))}"
        )
    chosen, todo = set(), [by_name[normalize(name)] for name in keep]
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend(leaves[name].needs)
    return chosen


def check_name(name: str, files: list[str]) -> None:
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise StarterError(f"--name {name!r} is not a valid Python package name")
    ignored = (REPO / ".gitignore").read_text().split() if (REPO / ".gitignore").exists() else []
    taken = {path.split("/")[0] for path in files} | {entry.strip("/") for entry in ignored}
    if name != PACKAGE and name in taken:
        raise StarterError(f"--name {name!r} is a folder or file of the project; choose another")
    if name in sys.stdlib_module_names or (name != PACKAGE and find_spec(name) is not None):
        raise StarterError(f"--name {name!r} is a module Python already finds; choose another")
    if len(name) > MAX_NAME:  # each mention grows: comments could pass the line limit
        raise StarterError(f"--name {name!r} is over {MAX_NAME} characters; choose a shorter one")


def check_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StarterError(f"{dest} exists and is not an empty folder; choose a new one")


def template_files() -> list[str]:
    """The template's files: those git tracks or would add (so no logs, data or .venv)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        raise StarterError(
            f"{REPO} is not a git clone of the template (or git is missing)"
        ) from None
    return sorted({path for path in listed.split("\0") if path and (REPO / path).is_file()})


def keep_marked_blocks(text: str, kept: set[str], known: set[str], where: str) -> str:
    """Markdown without the blocks marked for a leaf that is not kept, or for the template."""
    out, position = [], 0
    while start := MARKER.search(text, position):
        end = END.search(text, start.end())
        if end is None or MARKER.search(text, start.end(), end.start()):
            raise StarterError(f"{where}: a leaf marker is not closed before the next one")
        names = [n.strip() for n in (start["leaves"] or "").split(",") if n.strip()]
        if unknown := set(names) - known:
            raise StarterError(f"{where}: the marker names an unknown leaf {sorted(unknown)[0]!r}")
        out.append(text[position : start.start()])
        if start["leaves"] is not None and set(names) <= kept:
            out.append(text[start.end() : end.start()])
        position = end.end()
    out.append(text[position:])
    if stray := END.search("".join(out)):
        raise StarterError(f"{where}: {stray[0].strip()} closes no marker")
    return re.sub(r"\n{3,}", "\n\n", "".join(out))  # no run of blank lines where a block was


def drop_notebook_sections(text: str, titles: list[str]) -> str:
    """A notebook without the sections titled: from their heading cell to the next heading."""
    notebook = json.loads(text)
    cells, skipping = [], False
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.startswith("## "):
            skipping = any(source.startswith(f"## {title}") for title in titles)
        if not skipping:
            cells.append(cell)
    if all(str(cell.get("id", "0")).isdigit() for cell in cells):  # nbstripout numbers them
        for number, cell in enumerate(cells):
            cell["id"] = str(number)
    notebook["cells"] = cells
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"  # as nbformat


def prune_pyproject(text: str, extras: set[str], requirements: set[str]) -> str:
    """``pyproject.toml`` without the dropped leaves' extras and dev requirements."""
    lines, out = text.splitlines(keepends=True), []
    for line in lines:
        extra = re.match(r"([A-Za-z0-9_-]+) = \[", line)
        requirement = re.match(r'\s+"([A-Za-z0-9_.-]+)[<>=!~\[;"]', line)
        if (extra and extra[1] in extras) or (requirement and requirement[1] in requirements):
            while out and out[-1].startswith("#"):  # the extra's comment goes with it
                out.pop()
            continue
        out.append(line)
    return "".join(out)


def rename_package(text: str, name: str) -> str:
    """``text`` with the package ``project`` called ``name``: imports, dotted and file paths,
    ``python -m``, and the few string literals that name the package."""
    if name == PACKAGE:
        return text
    p = re.escape(PACKAGE)
    package_find = f'include = ["{PACKAGE}", "{PACKAGE}.*"]'  # pyproject.toml
    text = text.replace(package_find, f'include = ["{name}", "{name}.*"]')
    # A path starting a line of a column layout (the README's map) keeps the column.
    text = re.sub(
        rf"^{p}(/\S*)( +)(?=\S)",
        lambda m: f"{name}{m[1]}{' ' * max(1, len(m[2]) + len(PACKAGE) - len(name))}",
        text,
        flags=re.M,
    )
    text = re.sub(rf"(?<![\w./\[-]){p}(?=[./][A-Za-z_])", name, text)
    text = re.sub(rf"(?:(?<=-m )|(?<=import )|(?<=from )){p}\b", name, text)
    text = re.sub(rf'(?:(?<="-m", ")|(?<=REPO / ")|(?<=\[")|(?<=\{{")){p}"', f'{name}"', text)
    text = re.sub(rf'^name = "{p}"$', f'name = "{name}"', text, flags=re.M)  # pyproject.toml
    return re.sub(rf"`{p}`", f"`{name}`", text)


def build(dest: Path, name: str, keep: Sequence[str]) -> tuple[set[str], int]:
    """Write the new project at ``dest``; return the leaves kept and the number of files."""
    leaves, template_only = leaves_file.read()
    kept_names = chosen_leaves(keep, leaves)
    listed = template_files()
    check_name(name, listed)
    check_destination(dest)
    dropped = [leaf for leaf in leaves.values() if leaf.name not in kept_names]
    dropped_files = set(template_only).union(*(leaf.files() for leaf in dropped))
    files = {path for path in listed if path not in dropped_files}
    kept = {leaf.name: leaf for leaf in leaves.values() if leaf.name in kept_names}
    sections: dict[str, list[str]] = {}
    for leaf in dropped:
        for notebook, title in leaf.cells.items():
            sections.setdefault(notebook, []).append(title)
    extras = {extra for leaf in dropped for extra in leaf.extras}
    requirements = {r for leaf in dropped for r in leaf.requirements} - {
        r for leaf in kept.values() for r in leaf.requirements
    }

    dest.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for path in sorted(files):
            source = REPO / path
            target = building / re.sub(rf"^{PACKAGE}/", f"{name}/", path)
            target.parent.mkdir(parents=True, exist_ok=True)
            suffix = source.suffix if source.suffix in TEXT_SUFFIXES else None
            if suffix is None or (suffix == "" and source.name != "Makefile"):
                shutil.copy2(source, target)
                continue
            text = source.read_text()
            if path == leaves_file.LEAVES_FILE:
                text = leaves_file.document(kept, files)
            if suffix == ".md":
                text = keep_marked_blocks(text, kept_names, set(leaves), path)
            if path == "README.md":
                text = leaves_file.rewrite_readme(text, kept, files, PACKAGE, name)
            if path in sections:
                text = drop_notebook_sections(text, sections[path])
            if path == "pyproject.toml":
                text = prune_pyproject(text, extras, requirements)
            target.write_text(rename_package(text, name))
            shutil.copymode(source, target)
        tidy(building)
        commit(building, name, sorted(kept_names))
        if dest.exists():
            dest.rmdir()
        building.rename(dest)
    finally:
        if building.exists():
            shutil.rmtree(building)
    return kept_names, len(files)


def tidy(folder: Path) -> None:
    """Imports sorted and code formatted under the new name, with the template's own ruff."""
    if find_spec("ruff") is None:
        print("ruff is not installed here: run `make format` in the new project once")
        return
    for command in (["check", "--select", "I", "--fix"], ["format"]):
        subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--quiet", "--no-cache", "."],
            cwd=folder,
            check=True,
            capture_output=True,
        )


def commit(folder: Path, name: str, kept: list[str]) -> None:
    """A fresh repository with one commit (a default identity only where git has none)."""
    env = dict(os.environ)
    identity = subprocess.run(
        ["git", "config", "user.email"], cwd=folder, capture_output=True, text=True, check=False
    )
    if not identity.stdout.strip():
        env.update(
            GIT_AUTHOR_NAME=name,
            GIT_AUTHOR_EMAIL=f"{name}@localhost",
            GIT_COMMITTER_NAME=name,
            GIT_COMMITTER_EMAIL=f"{name}@localhost",
        )
    origin = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    message = (
        f"Start {name} from the image-classification template\n\n"
        f"Template commit: {origin or 'unknown'}"
        f"{' (with changes not committed there)' if dirty else ''}\n"
        f"Leaves kept: {', '.join(kept) or 'none'}\n"
    )
    for command in (
        ["git", "init", "--quiet", "--initial-branch", "main"],
        ["git", "add", "--all"],
        ["git", "commit", "--quiet", "--no-verify", "--message", message],
    ):
        subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PACKAGE}.starter",
        description="Write a new project: the core, the leaves you keep, the package renamed.",
    )
    parser.add_argument("dest", type=Path, help="the new project's folder (new or empty)")
    parser.add_argument("--name", required=True, help="the Python package's name, e.g. my_project")
    parser.add_argument(
        "--keep",
        nargs="+",
        action="extend",
        default=[],
        metavar="LEAF",
        help='leaves to keep, by their README names ("transfer learning", EMA, ...)',
    )
    args = parser.parse_args(argv)
    try:
        kept, count = build(args.dest.resolve(), args.name, args.keep)
    except (StarterError, OSError) as error:  # OSError: a folder that cannot be written
        raise SystemExit(f"{parser.prog}: {error}") from None
    except subprocess.CalledProcessError as error:  # git or ruff refused (nothing is left)
        said = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        raise SystemExit(
            f"{parser.prog}: {' '.join(map(str, error.cmd[:3]))} failed: {said[-1] if said else ''}"
        ) from None
    leaves = ", ".join(sorted(kept)) or "none"
    print(f"{args.dest}: {count} files, package {args.name}, leaves: {leaves}")
    print(f"next: cd {args.dest} && make test")
    return args.dest


if __name__ == "__main__":
    main()
