"""The notebooks run top to bottom, headless, and are committed without outputs.

Each notebook is executed in a fresh Jupyter kernel (nbclient), in a working
directory with ``configs/`` and the digits, as a user's clone has them. The
suite sets ``NOTEBOOK_QUICK=1``, which each notebook reads in its setup cell to
train for fewer epochs; every cell still runs. Full-length times are in
notebooks/README.md.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
IDS = [path.stem for path in NOTEBOOKS]
# The plots each notebook draws, per section (its "## " heading): curves, confusion matrix, image
# grids, the LR-finder plot... A section a starter left out with its leaf is not expected.
PLOTS = {
    "01-quickstart": {
        "## Training curves, read back from the logs": 1,
        "## Confusion matrix on the test split": 1,
        "## The misclassified test images": 1,
    },
    "02-transfer-learning": {
        "## Step 2: learn digits 5-9 from a few images per class, three ways": 1
    },
    "03-custom-losses": {
        "## Per-class recall and macro F1": 1,
        "## Write your own loss and plug it in": 1,
    },
    "04-debugging-and-speed": {"## 1. Overfit one batch": 1, "## 2. Learning-rate finder": 1},
}


def test_every_notebook_s_plots_are_listed():
    assert set(IDS) <= set(PLOTS) and IDS


def plots_per_section(notebook: nbformat.NotebookNode) -> tuple[dict[str, int], set[str]]:
    """The images each section's code cells showed, and every section's heading."""
    counts: dict[str, int] = {}
    sections, section = set(), ""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            section = cell.source.splitlines()[0]
            sections.add(section)
        elif cell.cell_type == "code":
            shown = sum("image/png" in output.get("data", {}) for output in cell.outputs)
            if shown:
                counts[section] = counts.get(section, 0) + shown
    return counts, sections


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [
        number
        for number, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; run `make format` (nbstripout)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cell_says_what_it_shows_and_how_long_it_takes(path: Path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown"
    assert "What this shows" in first.source and "How long" in first.source


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_top_to_bottom(path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in Jupyter
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}")
    # Every code cell ran, and the last one printed the notebook's run time.
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    last = "".join(output.get("text", "") for output in code[-1].outputs)
    assert "notebook ran in" in last
    shown, sections = plots_per_section(notebook)
    expected = {title: n for title, n in PLOTS[path.stem].items() if title in sections}
    assert shown == expected, f"{path.name}: plots shown per section"
    # The notebooks write their runs under logs/ of the working directory.
    assert any((workdir / "logs").iterdir())
