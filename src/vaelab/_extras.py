"""Optional dependencies: a missing one is named together with the extra that installs it."""

from __future__ import annotations

import importlib

from vaelab.errors import MissingExtra

# The distribution that provides each importable module, for the message.
_DISTRIBUTIONS = {"PIL": "Pillow"}


def require_extra(extra: str, *modules: str) -> None:
    """Raise MissingExtra naming ``vaelab[extra]`` unless every one of `modules` imports."""
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(_DISTRIBUTIONS.get(module, module))
    if missing:
        raise MissingExtra(
            f"this needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: pip install 'vaelab[{extra}]'"
        )
