"""Small builders of the report's HTML: escaping, numbers, tables, figure sizes."""

from __future__ import annotations

import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

from vaelab.errors import VaelabError


def escape(value: Any) -> str:
    """Text made safe inside HTML (quotes too)."""
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A number as the report shows it: integers with separators, floats to `digits`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "", kind: str = ""
) -> str:
    """An HTML table of `headers` and `rows` (cells already HTML)."""
    attributes = (f' id="{table_id}"' if table_id else "") + (f' class="{kind}"' if kind else "")
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table{attributes}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    """Nested mappings as (dotted.key, value) pairs; lists joined by commas."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    elif isinstance(value, (list, tuple)):
        yield prefix, ", ".join(map(str, value))
    else:
        yield prefix, value


def keys_table(pairs: Iterable[tuple[str, Any]], table_id: str) -> str:
    """A two-column table of settings and values."""
    rows = [[f"<code>{escape(k)}</code>", escape("none" if v is None else v)] for k, v in pairs]
    return table(["setting", "value"], rows, table_id, "keys")


def png_size(png: bytes, name: str = "a figure") -> tuple[int, int]:
    """(width, height) of PNG bytes, read by Pillow; anything else is refused."""
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        raise VaelabError(
            f"{name}: not a PNG file; draw the figures again (write_figures)"
        ) from None
