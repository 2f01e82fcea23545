"""Run configs from files: JSON, YAML or TOML with the sections of config.json.

A file holds `model`, `data` and `train` sections with the fields of `ModelConfig`, `DataConfig`
and `TrainConfig` (any may be left out: the tutorial's defaults apply). A run's own config.json is
a config file too: what vaelab recorded beside the config (the dataset, device, versions, the
choice of weights) is ignored, and it must hold all three sections. Any other key is refused, as
is a value of the wrong type. A relative path in the file (`data.source`, `data.test_source`,
`data.data_dir`, `data.train_csv`, `data.test_csv`) names a file beside the config file: it is
resolved against the file's folder, not the current directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from vaelab._io import parse_json, read_text
from vaelab.config import PATH_FIELDS, RunConfig
from vaelab.config_sections import SECTIONS, key_text, require_sections, short
from vaelab.errors import VaelabError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

# What config.json records beside the config: ignored when a run's config.json is a config file.
RECORDED_SECTIONS = ("dataset", "device", "precision", "versions", "selection", "posterior")
FORMATS = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str | Path, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The sections of a config file as nested dicts, checked for unknown sections (not yet for
    field values: `RunConfig.from_dict` does that), relative paths resolved against the file's
    folder; `say` is told each path so resolved."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise VaelabError(
            f"{path}: a config file must end in .json, .yaml, .yml or .toml",
            parameters=("config",),
        )
    text = read_text(path, f"a {kind} config file", limit=MAX_CONFIG_BYTES)
    raw = _parse(path, kind, text.removeprefix("\ufeff"))  # an editor's byte-order mark
    if not isinstance(raw, dict):
        raise VaelabError(
            f"{path}: a config file holds a mapping of sections ({', '.join(SECTIONS)})"
        )
    unknown = sorted(key_text(key) for key in raw if key not in (*SECTIONS, *RECORDED_SECTIONS))
    if unknown:
        raise VaelabError(
            f"{path}: unknown section(s) {', '.join(unknown)}; a config file has "
            f"{', '.join(SECTIONS)}"
        )
    if any(name in raw for name in RECORDED_SECTIONS):  # a run's config.json
        try:
            require_sections(raw)
        except VaelabError as exc:
            raise VaelabError(f"{path}: {exc}") from None
    sections = {name: raw[name] for name in SECTIONS if name in raw}
    _resolve_relative_paths(sections, path, say)
    return sections


def load_config_file(path: str | Path) -> RunConfig:
    """The RunConfig a config file describes, every field checked."""
    return config_from_sections(read_config_file(path), path)


def config_from_sections(sections: dict[str, Any], path: str | Path) -> RunConfig:
    """`RunConfig.from_dict` with its refusals naming the file they came from."""
    try:
        return RunConfig.from_dict(sections)
    except (TypeError, VaelabError) as exc:
        raise VaelabError(f"{path}: {exc}") from None


def _resolve_relative_paths(
    sections: dict[str, Any], path: Path, say: Callable[[str], None] | None
) -> None:
    """Make the data section's relative paths name files beside the config file (in place): the
    same file is read from any working directory. A built-in dataset's name stays a name."""
    from vaelab.data.registry import is_builtin_name  # data imports config

    data = sections.get("data")
    if not isinstance(data, dict):
        return  # refused with its section's name when the config is built
    for name in PATH_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value or "\0" in value:
            continue  # not a path: the config refuses it
        if name == "source" and is_builtin_name(value):
            continue
        given = _expand_home(Path(value))
        if given.is_absolute():
            data[name] = str(given)
            continue
        data[name] = str(path.parent / given)
        if say is not None:
            say(
                f"{path}: data.{name} {value} is relative to the config file's folder: "
                f"{os.path.abspath(data[name])}"
            )


def _expand_home(path: Path) -> Path:
    """'~/x' as the home folder's x (a config file is not read by a shell that would)."""
    try:
        return path.expanduser()
    except RuntimeError:  # no home folder to expand to: the path stays as written
        return path


def _parse(path: Path, kind: str, text: str) -> Any:
    try:
        return _parse_text(path, kind, text)
    except RecursionError:
        raise VaelabError(f"{path}: {kind} nested too deeply") from None


def _parse_text(path: Path, kind: str, text: str) -> Any:
    if kind == "JSON":
        return parse_json(text, path)
    if kind == "TOML":
        try:
            return tomllib.loads(text)
        except ValueError as exc:  # TOMLDecodeError, and a date or time that does not exist
            raise VaelabError(f"{path}: not valid TOML ({_first_line(exc)})") from None
    import yaml  # PyYAML; its safe loader builds plain data only, never Python objects

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        raise VaelabError(
            f"{path}: {line}not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    except (ValueError, OverflowError) as exc:  # a date that does not exist, a 5000-digit number
        raise VaelabError(f"{path}: not valid YAML ({_first_line(exc)})") from None


def _unique_key_loader() -> type:
    """PyYAML's SafeLoader, refusing a key a mapping holds twice (PyYAML keeps the last one
    silently); a merge (<<) may still override the keys it brings."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {short(key)} is given twice in one mapping; give "
                        "each key once", key_node.start_mark,
                    )  # fmt: skip
                if isinstance(key, Hashable):
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _first_line(error: Exception) -> str:
    """An exception's message cut to one short line."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]
