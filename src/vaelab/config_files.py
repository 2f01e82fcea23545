"""Run configs from files: JSON, YAML or TOML with the sections of config.json.

A file holds `model`, `data` and `train` sections with the fields of `ModelConfig`, `DataConfig`
and `TrainConfig` (any may be left out: the tutorial's defaults apply). A run's own config.json is
a config file too: what vaelab recorded beside the config (the dataset, device, versions, the
choice of weights) is ignored. Any other key is refused, as is a value of the wrong type.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vaelab._io import parse_json, read_text
from vaelab.config import RunConfig
from vaelab.errors import VaelabError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

SECTIONS = ("model", "data", "train")
# What config.json records beside the config: ignored when a run's config.json is a config file.
RECORDED_SECTIONS = ("dataset", "device", "precision", "versions", "selection")
FORMATS = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML"}
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The sections of a config file as nested dicts, checked for unknown keys (not yet for
    field values: `RunConfig.from_dict` does that)."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise VaelabError(
            f"{path}: a config file must end in .json, .yaml, .yml or .toml",
            parameters=("config",),
        )
    text = read_text(path, f"a {kind} config file", limit=MAX_CONFIG_BYTES)
    raw = _parse(path, kind, text)
    if not isinstance(raw, dict):
        raise VaelabError(
            f"{path}: a config file holds a mapping of sections ({', '.join(SECTIONS)})"
        )
    unknown = sorted(set(raw) - set(SECTIONS) - set(RECORDED_SECTIONS))
    if unknown:
        raise VaelabError(
            f"{path}: unknown section(s) {', '.join(map(str, unknown))}; a config file has "
            f"{', '.join(SECTIONS)}"
        )
    return {name: raw[name] for name in SECTIONS if name in raw}


def load_config_file(path: str | Path) -> RunConfig:
    """The RunConfig a config file describes, every field checked."""
    return config_from_sections(read_config_file(path), path)


def config_from_sections(sections: dict[str, Any], path: str | Path) -> RunConfig:
    """`RunConfig.from_dict` with its refusals naming the file they came from."""
    try:
        return RunConfig.from_dict(sections)
    except (TypeError, VaelabError) as exc:
        raise VaelabError(f"{path}: {exc}") from None


def _parse(path: Path, kind: str, text: str) -> Any:
    if kind == "JSON":
        return parse_json(text, path)
    if kind == "TOML":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise VaelabError(f"{path}: not valid TOML ({exc})") from None
    import yaml  # PyYAML; safe_load builds plain data only, never Python objects

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        raise VaelabError(
            f"{path}: {line}not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    except RecursionError:
        raise VaelabError(f"{path}: YAML nested too deeply") from None
