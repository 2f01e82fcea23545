"""The latent explorer as a notebook widget (anywidget): the page of `vaelab serve` inside an
output cell, with no server.

The front end is the served page's own code: `static/explorer.js` followed by the few lines of
`static/widget.js`, which send its requests over the widget's comm. `ExplorerWidget.answer`
answers them with the functions the server's routes call (`vaelab.explorer.app`), so a request
is checked and answered alike in both. A front end without widgets (nbconvert, a static page)
shows the bundle's HTML instead: the latent scatter as a figure, with one line saying why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaelab._extras import require_extra

require_extra("notebook", "anywidget", "ipywidgets", "fastapi")

import anywidget
import numpy as np
import traitlets

from vaelab.errors import VaelabError
from vaelab.explorer.app import (
    decode_answer,
    interpolate_answer,
    points_payload,
    sample_answer,
)
from vaelab.explorer.core import Explorer
from vaelab.explorer.requests import ApiError, latent_vectors

STATIC_DIR = Path(__file__).parent / "static"
SCOPE = ".vaelab-explorer"  # the class widget.js gives the widget's element
NO_WIDGETS_NOTE = (
    "a static figure: the interactive explorer needs a notebook front end with widgets "
    "(JupyterLab or Jupyter Notebook)"
)


def page_markup() -> str:
    """The body of the served page (`static/index.html`), which the widget renders as its own."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    match = re.search(r"<body>(.*)</body>", page, re.DOTALL)
    if match is None:  # the package's own file: only an edit of it can get here
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} has no <body>")
    return match.group(1).strip()


def scoped_css(css: str, scope: str = SCOPE) -> str:
    """The page's style sheet confined to the widget: `:root` and `body` become `scope`, every
    other selector is looked up under it, so nothing leaks into the notebook's own page."""

    def scope_rule(match: re.Match[str]) -> str:
        selectors = [part.strip() for part in match.group(1).split(",")]
        inside = [scope if s in (":root", "body") else f"{scope} {s}" for s in selectors]
        return ", ".join(inside) + " {"

    return re.sub(r"(?m)^([^{}\n][^{}]*?)\s*\{", scope_rule, css)


def _static(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


Route = Callable[[Explorer, dict[str, Any]], dict[str, Any]]
ROUTES: dict[str, Route] = {
    "/api/decode": decode_answer,
    "/api/interpolate": interpolate_answer,
    "/api/sample": sample_answer,
}


class ExplorerWidget(anywidget.AnyWidget):
    """The latent explorer of one model in a notebook cell: scatter, live decode, interpolation,
    prior samples. Built by `vaelab.explore`."""

    _esm = _static("explorer.js") + "\n" + _static("widget.js")
    _css = scoped_css(_static("explorer.css"))
    _markup = traitlets.Unicode(page_markup()).tag(sync=True)

    def __init__(self, explorer: Explorer, fallback: Any = None, **kwargs: Any) -> None:
        """`fallback`, when given, is what a front end without widgets shows (an object with
        `_repr_mimebundle_`, see `vaelab.notebook.StaticView`)."""
        super().__init__(**kwargs)
        self.explorer = explorer
        self.fallback = fallback
        self._points = points_payload(explorer)
        self.on_msg(self._on_message)

    def decode(self, z: Any) -> np.ndarray:
        """uint8 images decoded from latent vectors (N x latent_dim), as the widget shows them:
        N x H x W for one channel, N x H x W x 3 for RGB. Bad values raise VaelabError."""
        try:
            rows = np.asarray(z, dtype=np.float64).tolist()
        except (TypeError, ValueError):
            raise VaelabError("z must be a list of latent vectors (numbers)") from None
        try:
            codes = latent_vectors(rows, self.explorer.latent_dim, "z")
        except ApiError as exc:
            raise VaelabError(exc.message, parameters=("z",)) from None
        return self.explorer.decode_pixels(codes)

    def answer(self, request: Any) -> dict[str, Any]:
        """The reply to one request of the front end, `{"id", "path", "body"}`: `{"id",
        "payload"}` with what the server's JSON API answers, or `{"id", "error"}` with its
        one-line message."""
        if not isinstance(request, dict):
            return {"id": None, "error": "a request must be a JSON object"}
        ident = request.get("id")
        path, body = request.get("path"), request.get("body")
        try:
            if path == "/api/points":
                return {"id": ident, "payload": self._points}
            route = ROUTES.get(path) if isinstance(path, str) else None
            if route is None:
                return {"id": ident, "error": f"no such request: {str(path)[:60]}"}
            if not isinstance(body, dict):
                raise ApiError(400, "request body must be a JSON object")
            return {"id": ident, "payload": route(self.explorer, body)}
        except ApiError as exc:
            return {"id": ident, "error": exc.message}

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        self.send(self.answer(content))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle: Any = super()._repr_mimebundle_(**kwargs)
        if self.fallback is None or not bundle:
            return bundle
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        static = self.fallback._repr_mimebundle_()
        data = {**data, "text/html": static["text/html"]}
        return (data, metadata) if isinstance(bundle, tuple) else data
