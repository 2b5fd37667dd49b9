"""``python -m project.starter``: a new project with the core and the leaves kept, renamed.

The fast tests check what the starter writes (and refuses); the slow one works
in each new tree as its owner would: ``make lint``, the default ``fit`` for one
epoch, its ``make test-fast`` and the pre-commit hooks, with the template's
package blocked from import so that nothing in the new tree leans on it. A
starter with leaves runs its leaves' fast tests and the pre-commit test: the
core's fast tests are the same in every tree, and the starter without leaves runs
them all.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from project import leaves as leaves_file
from project import starter

LEAVES, TEMPLATE_ONLY = leaves_file.read()
BIN = Path(sys.executable).parent
TWO_LEAVES = ["losses", "EMA"]


def start(dest: Path, name: str = "acme", keep: list[str] | None = None) -> Path:
    starter.main([str(dest), "--name", name, *(["--keep", *keep] if keep else [])])
    return dest


def tree_files(tree: Path) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=tree, capture_output=True, text=True, check=True
    )
    return set(filter(None, listed.stdout.split("\0")))


def mentions(leaf: leaves_file.Leaf, name: str) -> set[str]:
    """What names a leaf in a text: its files and dotted modules, renamed to ``name``."""
    renamed = {re.sub(r"^project/", f"{name}/", path) for path in {*leaf.files(), *leaf.paths}}
    modules = {module.replace("project", name, 1) for module in leaf.modules}
    return {path for path in renamed if "/" in path} | modules


# -- what the starter writes ---------------------------------------------------------------


def test_a_starter_without_leaves_has_the_core_renamed_and_nothing_of_the_leaves(tmp_path: Path):
    tree = start(tmp_path / "mine")
    files = tree_files(tree)
    assert "acme/cli.py" in files and "acme/models/classifier.py" in files
    assert not any(path.startswith("project/") for path in files)
    assert not set(TEMPLATE_ONLY) & files, "the starter itself stays in the template"
    github = {".github/workflows/ci.yml", ".github/dependabot.yml", ".pre-commit-config.yaml"}
    assert github <= files, "the CI workflow, Dependabot and the hooks come along"
    for leaf in LEAVES.values():
        assert not {re.sub(r"^project/", "acme/", p) for p in leaf.files()} & files, leaf.name
    # No document of the new tree points at a leaf it does not have.
    documents = [p for p in files if p.endswith((".md", ".ipynb", ".yaml", ".yml", ".toml"))]
    for path in documents:
        text = (tree / path).read_text()
        for leaf in LEAVES.values():
            named = sorted(m for m in mentions(leaf, "acme") if m in text)
            assert not named, f"{path} names {named} of the leaf {leaf.name!r}"
    # The package's name everywhere, and one commit recording where it came from.
    pyproject = (tree / "pyproject.toml").read_text()
    assert 'name = "acme"' in pyproject and 'include = ["acme", "acme.*"]' in pyproject
    assert "python -m acme fit" in (tree / "README.md").read_text()
    assert "python -m project" not in (tree / "README.md").read_text()
    assert yaml.safe_load((tree / "leaves.yaml").read_text()) == {"leaves": {}}
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=tree, capture_output=True, text=True, check=True
    )
    assert log.stdout.count("\n") == 1 and "Start acme from the" in log.stdout
    # Leaves' requirements and extras are gone from pyproject.toml; the core's stay.
    assert "optuna" not in pyproject and "wandb" not in pyproject and "litserve" not in pyproject
    assert "lightning>=" in pyproject and "pytest>=" in pyproject


def test_a_kept_leaf_brings_its_paths_and_the_leaves_it_needs(tmp_path: Path):
    tree = start(tmp_path / "mine", keep=["overfitting-guide", "EMA"])
    files = tree_files(tree)
    kept = {"overfitting guide", "EMA", *LEAVES["overfitting guide"].needs}
    assert set(yaml.safe_load((tree / "leaves.yaml").read_text())["leaves"]) == kept
    for name in kept:
        for path in LEAVES[name].files():
            shared = [other for other in LEAVES.values() if path in other.files()]
            if all(other.name in kept for other in shared):
                assert re.sub(r"^project/", "acme/", path) in files, path
    readme = (tree / "README.md").read_text()
    section = readme.split("\n## Leaves", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("**")[1] for line in section.splitlines() if line.startswith("- **")}
    assert listed == kept
    assert "docs/overfitting.md" in readme and not re.search(r"^<!-- ", readme, flags=re.M)
    assert "## Start your own project" not in readme, "the template's own section stays there"


def test_every_marked_block_names_real_leaves_and_keeping_all_changes_only_the_markers():
    for path in [*REPO.glob("*.md"), *REPO.glob("docs/**/*.md"), *REPO.glob("notebooks/*.md")]:
        text = path.read_text()
        kept = starter.keep_marked_blocks(text, set(LEAVES), set(LEAVES), str(path))
        without_template = re.sub(
            r"^<!-- template -->\n.*?^<!-- /template -->\n", "", text, flags=re.M | re.S
        )
        unmarked = re.sub(r"^<!-- /?leaf\b.*-->\n", "", without_template, flags=re.M)
        assert kept == re.sub(r"\n{3,}", "\n\n", unmarked)


def test_marker_mistakes_are_one_line():
    known = {"EMA"}
    with pytest.raises(starter.StarterError, match="unknown leaf 'EMAX'"):
        starter.keep_marked_blocks("<!-- leaf: EMAX -->\nx\n<!-- /leaf -->\n", known, known, "f")
    with pytest.raises(starter.StarterError, match="not closed"):
        starter.keep_marked_blocks("<!-- leaf: EMA -->\nx\n", known, known, "f")
    with pytest.raises(starter.StarterError, match="f: <!-- /leaf --> closes no marker"):
        starter.keep_marked_blocks(
            "<!-- leaf: EMA -->\nx\n<!-- /leaf -->\n<!-- /leaf -->\n", known, known, "f"
        )
    text = "a\n<!-- leaf: EMA -->\nb\n<!-- /leaf -->\nc\n"
    assert starter.keep_marked_blocks(text, set(), known, "f") == "a\nc\n"
    spaced = "a\n\n<!-- leaf: EMA -->\nb\n<!-- /leaf -->\n\nc\n"
    assert starter.keep_marked_blocks(spaced, set(), known, "f") == "a\n\nc\n"
    assert starter.keep_marked_blocks(text, known, known, "f") == "a\nb\nc\n"


def test_the_rename_touches_the_package_and_not_the_word():
    text = "\n".join(
        [
            "from project.models import ConvNet",
            "import project",
            "class_path: project.models.ImageClassifier",
            "python -m project fit --config configs/default.yaml",
            'command = [sys.executable, "-m", "project", "fit"]',
            "see project/cli.py and `project`",
            '[project]\nname = "project"\n[project.optional-dependencies]',
            "~/.cache/project/file-checks and the project's own warnings",
            'key = next(k for k in ("project", "experiment_name") if k in settings)',
        ]
    )
    assert starter.rename_package(text, "acme").splitlines() == [
        "from acme.models import ConvNet",
        "import acme",
        "class_path: acme.models.ImageClassifier",
        "python -m acme fit --config configs/default.yaml",
        'command = [sys.executable, "-m", "acme", "fit"]',
        "see acme/cli.py and `acme`",
        "[project]",
        'name = "acme"',
        "[project.optional-dependencies]",
        "~/.cache/project/file-checks and the project's own warnings",
        'key = next(k for k in ("project", "experiment_name") if k in settings)',
    ]


@pytest.mark.parametrize(
    ("name", "keep", "message"),
    [
        ("3d_cats", [], "--name '3d_cats' is not a valid Python package name"),
        ("class", [], "--name 'class' is not a valid Python package name"),
        ("json", [], "--name 'json' is a module Python already finds"),
        ("torch", [], "--name 'torch' is a module Python already finds"),
        ("configs", [], "--name 'configs' is a folder or file of the project"),
        ("logs", [], "--name 'logs' is a folder or file of the project"),
        ("a_name_of_21_letters_", [], "--name 'a_name_of_21_letters_' is over 20 characters"),
        ("acme", ["ema", "no such leaf"], "unknown leaf 'no such leaf'; the leaves are: "),
    ],
)
def test_a_bad_request_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, keep: list[str], message: str
):
    with pytest.raises(SystemExit) as stopped:
        start(tmp_path / "mine", name=name, keep=keep)
    assert str(stopped.value).startswith(f"python -m project.starter: {message}")
    assert "\n" not in str(stopped.value)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not an empty folder"):
        start(tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    start(tmp_path / "empty-is-fine")  # an empty folder is filled
    (tmp_path / "empty").mkdir()
    assert (start(tmp_path / "empty") / "README.md").is_file()


# -- the new project works -----------------------------------------------------------------

# Every process of the new tree runs with the template's package blocked: a leftover
# "project" import fails there instead of quietly loading the template's code.
BLOCK_TEMPLATE = """
import importlib.abc, sys

class TemplateBlocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "project" or name.startswith("project."):
            raise ModuleNotFoundError(f"{name}: the template's package, not this project's")
        return None

sys.meta_path.insert(0, TemplateBlocked())
"""

# Every class_path of the configs and every import of the modules, benchmarks and notebooks
# resolves in the new tree; then the default fit runs for one epoch.
RESOLVES = """
import importlib, json, pkgutil, sys
from pathlib import Path
import yaml
name = sys.argv[1]

def class_paths(node):
    if isinstance(node, dict):
        own = [node["class_path"]] if isinstance(node.get("class_path"), str) else []
        return own + [p for value in node.values() for p in class_paths(value)]
    if isinstance(node, list):
        return [p for value in node for p in class_paths(value)]
    return []

package = importlib.import_module(name)
for module in pkgutil.walk_packages(package.__path__, f"{name}."):
    if module.name.split(".")[-1] not in ("__main__", "starter"):
        importlib.import_module(module.name)
for module in sorted(Path("benchmarks").glob("*.py")):
    importlib.import_module(f"benchmarks.{module.stem}")
for config in sorted(Path("configs").rglob("*.yaml")):
    for class_path in class_paths(yaml.safe_load(config.read_text())):
        module, _, attribute = class_path.rpartition(".")
        getattr(importlib.import_module(module), attribute)
for notebook in sorted(Path("notebooks").glob("*.ipynb")):
    for cell in json.loads(notebook.read_text())["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if cell["cell_type"] == "code" and line.startswith(("from ", "import ")):
                module = line.split()[1]
                assert importlib.util.find_spec(module) is not None, (notebook, line)
print("resolved")
# Then the default run, one epoch of it, in the same process.
importlib.import_module(f"{name}.cli").main(
    ["fit", "--config", "configs/default.yaml", "--trainer.max_epochs=1",
     "--trainer.enable_progress_bar=false"]
)
"""


@pytest.mark.slow  # trains, and runs each new tree's fast tests
@pytest.mark.parametrize(
    ("name", "keep"),
    [("acme", []), ("my_image_classifier", sorted(LEAVES)), ("acme", TWO_LEAVES)],
    ids=["no-leaf", "every-leaf", "two-leaves"],
)
def test_the_new_project_passes_its_lint_fit_and_fast_tests(
    tmp_path: Path, name: str, keep: list[str]
):
    tree = start(tmp_path / "mine", name=name, keep=keep)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TEMPLATE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(blocker)]),
        "PATH": os.pathsep.join([str(BIN), os.environ["PATH"]]),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    venv = Path(sys.executable).parents[1]

    def run(*command: str) -> str:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{' '.join(command)}:\n{(done.stdout + done.stderr)[-3000:]}"
        return done.stdout

    resolved_and_fit = run(sys.executable, "-c", RESOLVES, name)
    assert "resolved" in resolved_and_fit and "test accuracy" in resolved_and_fit
    # The environment is this one: make must not install the new tree into it (-o: "up to date").
    make = ["make", f"VENV={venv}", "-o", f"{venv}/.installed"]
    run(*make, "lint")
    # In one process, one thread: this test's own worker shares the cores with the rest.
    if keep:
        files = {f for leaf in keep for f in LEAVES[leaf].paths if f.startswith("tests/")}
        files = sorted(files | {"tests/test_repository.py"})
        tests = run(sys.executable, "-m", "pytest", "-p", "no:xdist", "-m", "not slow", *files)
    else:
        tests = run(*make, "test-fast", "TEST_WORKERS=-p no:xdist")
    # Its fast tests include tests/test_repository.py, which runs the pre-commit hooks on it.
    assert re.search(r"\d+ passed", tests) and " failed" not in tests


def test_a_later_template_fix_merges_into_the_renamed_project(tmp_path: Path):
    """The README's recipe: merge the template commit with ``-s ours`` once, then merge."""

    def git(folder: Path, *args: str) -> str:
        identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
        done = subprocess.run(
            ["git", *identity, *args], cwd=folder, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    template = tmp_path / "template"
    git(tmp_path, "clone", "--quiet", str(REPO), str(template))
    env = {**os.environ, "PYTHONPATH": str(template)}
    subprocess.run(
        [sys.executable, "-m", "project.starter", str(tmp_path / "mine"), "--name", "acme"],
        cwd=template,
        env=env,
        check=True,
        capture_output=True,
    )
    mine = tmp_path / "mine"
    origin = re.search(r"Template commit: (\w+)", git(mine, "log", "--format=%B")).group(1)
    assert origin == git(template, "rev-parse", "HEAD")

    nets = template / "project" / "models" / "nets.py"
    nets.write_text(nets.read_text() + "# a later fix in the template\n")
    git(template, "commit", "--quiet", "--all", "--message", "A later fix")

    git(mine, "remote", "add", "template", str(template))
    git(mine, "fetch", "--quiet", "template")
    git(mine, "merge", "-s", "ours", "--allow-unrelated-histories", "-m", "Template", origin)
    git(
        mine,
        "merge",
        "--quiet",
        "-m",
        "A later fix",
        f"template/{git(template, 'branch', '--show-current')}",
    )
    assert (
        (mine / "acme" / "models" / "nets.py")
        .read_text()
        .endswith("# a later fix in the template\n")
    )
    assert not (mine / "project").exists()


def readme_starter_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    inline = re.findall(r"`(python -m project\.starter [^`]+)`", readme)
    return [
        shlex.split(line.split("#")[0])
        for line in [*(line for block in blocks for line in block.splitlines()), *inline]
        if line.startswith("python -m project.starter ")
    ]


def test_the_readme_s_starter_commands_run_as_written(tmp_path: Path):
    commands = readme_starter_commands()
    assert len(commands) >= 3
    for number, command in enumerate(commands):
        dest = tmp_path / str(number) / "new"  # for the README's ../my-classifier and /tmp/scratch
        args = [str(dest), *command[4:]]
        assert command[:3] == ["python", "-m", "project.starter"]
        starter.main(args)
        assert (dest / ".git").is_dir() and (dest / "my_classifier" / "cli.py").is_file()


def test_a_leaf_comes_back_from_a_scratch_project_as_the_readme_says(tmp_path: Path):
    mine = start(tmp_path / "mine", name="my_classifier")
    start(tmp_path / "scratch", name="my_classifier", keep=["EMA"])
    paths = [
        "configs/presets/ema.yaml",
        "my_classifier/callbacks/averaging.py",
        "tests/test_ema.py",
    ]
    assert not any((mine / path).exists() for path in paths)
    for command in (
        ["git", "fetch", "--quiet", str(tmp_path / "scratch"), "main"],
        ["git", "checkout", "FETCH_HEAD", "--", *paths],
    ):
        subprocess.run(command, cwd=mine, check=True, capture_output=True)
    assert all((mine / path).is_file() for path in paths)
    readme = (REPO / "README.md").read_text()
    assert f"git checkout FETCH_HEAD -- {' '.join(paths)}" in readme


def test_a_destination_that_cannot_be_made_is_one_line(tmp_path: Path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SystemExit) as stopped:
        start(tmp_path / "a-file" / "mine")
    assert "a-file" in str(stopped.value) and "\n" not in str(stopped.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
