"""What a GitHub project expects, checked offline: workflows, Dependabot, pre-commit hooks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

BIN = Path(sys.executable).parent
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        (".github/workflows/ci.yml", "vendor.github-workflows"),
        (".github/workflows/ci.yml", "custom.github-workflows-require-timeout"),
        (".github/dependabot.yml", "vendor.dependabot"),
    ],
)
def test_github_files_match_github_s_schemas(path: str, schema: str):
    # The schemas GitHub's files are checked against (SchemaStore's), shipped with
    # check-jsonschema: no network. (actionlint would check more; its PyPI package
    # downloads the binary when installed, which this machine cannot.)
    done = tool(str(BIN / "check-jsonschema"), "--builtin-schema", schema, path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_pull_requests_run_the_fast_tests_and_main_the_whole_suite():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    runs = {name: [step.get("run") for step in job["steps"]] for name, job in jobs.items()}
    assert "make lint" in runs["lint"]
    steps = {step.get("run"): step.get("if") for step in jobs["test"]["steps"] if "run" in step}
    assert steps["make test-fast"] == "github.event_name == 'pull_request'"
    assert steps["make test"] == "github.event_name != 'pull_request'"
    for job in jobs.values():
        python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup"))
        # The Python version and the pip cache's key both come from pyproject.toml.
        assert python["with"]["python-version-file"] == "pyproject.toml"
        assert python["with"]["cache"] == "pip"
        assert python["with"]["cache-dependency-path"] == "pyproject.toml"


def test_dependabot_updates_the_python_packages_and_the_actions():
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    assert {update["package-ecosystem"] for update in config["updates"]} == {
        "pip",
        "github-actions",
    }


def test_the_pre_commit_hooks_are_local_and_pass_on_the_tree_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "nothing to download"
    tree = tmp_path / "tree"
    listed = tool("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    assert tool("git", "init", "-q", cwd=tree).returncode == 0
    assert tool("git", "add", "-A", cwd=tree).returncode == 0
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "cache"))
    done = tool(str(BIN / "pre-commit"), "run", "--all-files", cwd=tree)
    assert done.returncode == 0, done.stdout[-3000:]

    # A notebook with outputs and a 3 MB file are stopped, each by name.
    notebook = tree / "notebooks" / "01-quickstart.ipynb"
    content = json.loads(notebook.read_text())
    code = next(cell for cell in content["cells"] if cell["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    notebook.write_text(json.dumps(content, indent=1))
    (tree / "weights.bin").write_bytes(b"\0" * (3 * 2**20))
    tool("git", "add", "-A", cwd=tree)
    done = tool(str(BIN / "pre-commit"), "run", "--all-files", cwd=tree)
    assert done.returncode != 0
    assert "weights.bin is over 2 MB" in done.stdout
    assert "nbstripout" in done.stdout and "files were modified by this hook" in done.stdout
