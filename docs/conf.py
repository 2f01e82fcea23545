"""Sphinx configuration of the vaelab documentation.

Build: python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # document the checkout, installed or not

import vaelab  # noqa: E402

project = "vaelab"
author = "The vaelab developers"
copyright = "2026, The vaelab developers"
release = vaelab.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # MyST Markdown and the example notebooks (docs/notebooks/ links to examples/)
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# The notebooks are executed at build time, in a temporary folder, in the short mode their settings
# cell reads from these variables (the committed notebooks carry no outputs); the results are
# cached in _build/.jupyter_cache until a notebook changes. Any error, or anything a cell writes to
# stderr (a warning), fails the build.
for name, value in {
    "VAELAB_NOTEBOOK_EPOCHS": "1",
    "VAELAB_NOTEBOOK_TRAIN_IMAGES": "2000",
    "VAELAB_NOTEBOOK_TEST_IMAGES": "500",
    "VAELAB_NOTEBOOK_IWAE_K": "10",
    "VAELAB_NOTEBOOK_PER_CLASS": "100",
    "TQDM_DISABLE": "1",  # a progress bar is a widget: nothing to see on a static page
}.items():
    os.environ.setdefault(name, value)
nb_execution_mode = "cache"
nb_execution_in_temp = True
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_output_stderr = "warn"
# A static page cannot run the explorer's widget: it shows the widget's HTML, the static figure
# with its note, and loads no widget scripts from a CDN.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js: dict[str, dict[str, str]] = {}

# Markdown headings down to level 3 get anchors, for links such as training.md#the-numbers.
myst_heading_anchors = 3

# Docstrings write code names in single backticks: link them when they name a documented object,
# show them as code otherwise.
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
autodoc_preserve_defaults = True

# The API pages import every module; where an extra is not installed its imports are mocked.
autodoc_mock_imports = [
    name
    for name in ("matplotlib", "PIL", "fastapi", "starlette", "uvicorn")
    if importlib.util.find_spec(name) is None
]

html_title = f"vaelab {release}"
html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_static_path: list[str] = []
