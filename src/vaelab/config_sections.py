"""The sections of a config read from a file (config.json, a config file): untrusted nested data.

Each section must be a mapping of the fields of its config class, each value of its field's type;
every refusal names the section and the field (`data.test_split`), never a Python error. Nothing
here walks a value deeper than a list of scalars, so a deeply nested or self-referencing value
(YAML aliases) costs no more than a flat one.
"""

from __future__ import annotations

import difflib
import reprlib
from dataclasses import MISSING, fields
from typing import Any

from vaelab.errors import VaelabError

SECTIONS = ("model", "data", "train")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 30, 30, 4, 3


def build_section(kind: type, name: str, raw: dict[Any, Any]) -> Any:
    """The `kind` (ModelConfig, DataConfig, TrainConfig) that section `name` of `raw` describes.

    A section left out is the defaults; a section that is empty (null) or not a mapping, an
    unknown field or a value of the wrong type is one VaelabError naming the section and field.
    """
    if name not in raw:
        return kind()
    values = raw[name]
    if values is None:
        raise VaelabError(
            f"{name}: an empty section (null); give its fields, or {{}} for the defaults"
        )
    if not isinstance(values, dict):
        raise VaelabError(f"{name} must be a mapping of fields, got {short(values)}")
    _check_field_names(kind, name, values)
    for f in fields(kind):
        if f.name in values and f.default is not MISSING:
            value = values[f.name]
            if not _same_kind(f.default, value):
                raise VaelabError(f"{name}.{f.name} must be {_kind_name(f.default)}, got "
                                  f"{short(value)}")  # fmt: skip
    try:
        return kind(**values)
    except VaelabError as exc:
        raise VaelabError(_in_section(name, exc), parameters=exc.parameters) from None


def require_sections(raw: dict[Any, Any]) -> None:
    """Refuse a run's record (config.json) that lacks a section: it records all of them, so a
    missing one is damage, not a wish for the defaults."""
    missing = [name for name in SECTIONS if name not in raw]
    if missing:
        raise VaelabError(
            f"lacks its {' and '.join(missing)} section(s); a run's config.json records "
            f"{', '.join(SECTIONS)}"
        )


def key_text(key: Any) -> str:
    """A mapping's key as a message shows it: a printable string as it is, anything else (a
    number, a string holding a newline) as its repr, so that the message stays one line."""
    return key if isinstance(key, str) and key.isprintable() else short(key)


def short(value: Any) -> str:
    """A value as a message quotes it: its repr, cut short and at most two levels deep."""
    return _REPR.repr(value)


def _check_field_names(kind: type, name: str, values: dict[Any, Any]) -> None:
    known = [f.name for f in fields(kind)]
    unknown = sorted(key_text(key) for key in values if key not in known)
    if not unknown:
        return
    close = [match for key in unknown for match in difflib.get_close_matches(key, known, n=1)]
    hint = f" (did you mean {name}.{close[0]}?)" if close else ""
    raise VaelabError(f"unknown field(s) in {name}: {', '.join(unknown)}{hint}")


def _in_section(name: str, error: VaelabError) -> str:
    """A config class's refusal with its section: 'data.test_split ...' or 'data: ...'."""
    message = str(error)
    if any(message.startswith(field) for field in error.parameters):
        return f"{name}.{message}"
    return f"{name}: {message}"


def _same_kind(default: Any, value: Any) -> bool:
    """Whether a parsed value has the type of a field's default (files are not trusted)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, float) or (isinstance(value, int) and _fits_float(value))
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        kind = str if default == () and value and isinstance(value[0], str) else int
        return all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    if default is None:
        return value is None or isinstance(value, str)
    return isinstance(value, type(default))


def _fits_float(value: int) -> bool:
    """Whether an integer converts to a float (a 400-digit one does not)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _kind_name(default: Any) -> str:
    if isinstance(default, tuple):
        return "a list of integers" if default else "a list"
    if default is None:
        return "a string or null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(default), type(default).__name__)
