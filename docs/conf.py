"""Sphinx configuration of the vaelab documentation.

Build: python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib.util
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
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

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
