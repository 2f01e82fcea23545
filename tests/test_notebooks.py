"""The example notebooks: committed without outputs, and each executed top to bottom in a real
kernel in its short mode (the settings its first cell reads from the environment)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
DOCS_NOTEBOOKS = Path(__file__).resolve().parent.parent / "docs" / "notebooks"

# One epoch on a few thousand images: seconds per notebook, every cell still run.
SHORT_MODE = {
    "VAELAB_NOTEBOOK_EPOCHS": "1",
    "VAELAB_NOTEBOOK_TRAIN_IMAGES": "2000",
    "VAELAB_NOTEBOOK_TEST_IMAGES": "500",
    "VAELAB_NOTEBOOK_IWAE_K": "10",
    "VAELAB_NOTEBOOK_PER_CLASS": "100",
}

# The figures each notebook draws (matplotlib, inline), the explorer's fallback not counted.
FIGURES = {"tutorial": 9, "own_images": 1, "compare": 3}

# Run before the notebook's own cells: a warning issued from vaelab's code becomes an error.
STRICT = 'import warnings\nwarnings.filterwarnings("error", module=r"vaelab(\\..*)?$")'


def test_the_three_notebooks_are_there_and_the_docs_show_each():
    assert [p.name for p in NOTEBOOKS] == ["compare.ipynb", "own_images.ipynb", "tutorial.ipynb"]
    for notebook in NOTEBOOKS:
        shown = DOCS_NOTEBOOKS / notebook.name
        assert shown.is_symlink() and shown.resolve() == notebook


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, f"{path.name} has no code"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
    assert "EPOCHS" in "".join(code[0]["source"]), "the first code cell holds the settings"


def docs_execution(path: Path):
    """The documentation build's execution of this very notebook, from the jupyter-cache that
    $VAELAB_NOTEBOOK_CACHE names (`make test` builds the docs, from an empty cache, just before
    the tests); None when there is none.

    That build ran the notebook in the same short mode in a real kernel, and fails on any error
    and on anything a cell writes to stderr (every warning, vaelab's included), so its outputs
    answer for this test; `make test` then executes each notebook once, not twice.
    """
    where = os.environ.get("VAELAB_NOTEBOOK_CACHE")
    if not where or not Path(where).is_dir():
        return None
    nbformat = pytest.importorskip("nbformat")
    from jupyter_cache import get_cache

    cache = get_cache(where)
    try:
        record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
    except KeyError:
        return None
    return cache.get_cache_bundle(record.pk).nb


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_a_kernel(path, tmp_path, monkeypatch, fashion_mnist):
    notebook = docs_execution(path)
    if notebook is None:
        notebook = executed(path, tmp_path, monkeypatch)

    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    stderr = [out["text"] for out in outputs if out.get("name") == "stderr"]
    assert stderr == [], f"{path.name} wrote to stderr: {stderr}"
    shown = [out for out in outputs if out["output_type"] in ("display_data", "execute_result")]
    figures = sum("image/png" in out["data"] for out in shown)
    widgets = [out for out in shown if "application/vnd.jupyter.widget-view+json" in out["data"]]
    assert figures >= FIGURES[path.stem], f"{path.name} drew {figures} figures"
    explorers = [out for out in widgets if "vaelab.explore" in out["data"].get("text/html", "")]
    assert explorers, f"{path.name} did not show the explorer widget"


def executed(path: Path, tmp_path: Path, monkeypatch):
    """The notebook run top to bottom in a real kernel in its short mode, a warning issued from
    vaelab's code made an error."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for name, value in SHORT_MODE.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them
    monkeypatch.setenv("TQDM_MININTERVAL", "1")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(STRICT))
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    return notebook
