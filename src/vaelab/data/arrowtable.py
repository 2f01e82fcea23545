"""Parquet and Arrow IPC files read with pyarrow: their schema, rows and batches (`Table`), and
which of their columns hold the images and the labels (`Columns`; see `vaelab.data.arrowfile`).

Errors of pyarrow (a damaged file, a file of another type) become one line naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab._io import FILE_LIMIT, open_regular, parse_json, read_limit, size_words, too_large
from vaelab.config import DataConfig
from vaelab.errors import VaelabError

BATCH = 64  # rows decoded at a time
_LABEL_NAMES = ("label", "labels")
_IMAGE_TYPES = "binary, or the struct {bytes, path} of a Hugging Face Image"


# ---------------------------------------------------------------- files


class Table:
    """One Parquet or Arrow IPC file: its schema, its rows, its batches (of some columns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parquet = path.suffix.lower() == ".parquet"
        self.kind = "Parquet file" if self.parquet else "Arrow file"

    def schema(self) -> Any:
        """The pyarrow schema, with its metadata."""
        with self._errors(), self._opened() as (schema, _, _):
            return schema

    def rows(self) -> int:
        """How many rows the file holds (a Parquet file says; an Arrow file's batches are
        counted from their headers, the data left on disk)."""
        with self._errors(), self._opened() as (_, rows, batches):
            return rows if rows is not None else sum(batch.num_rows for batch in batches(None))

    def batches(self, columns: list[str]) -> Iterator[Any]:
        """The rows of `columns`, BATCH at a time (Arrow: one stored batch at a time, checked)."""
        with self._errors(), self._opened() as (_, _, batches):
            yield from batches(columns)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import pyarrow as pa

        try:
            yield
        except (pa.ArrowException, OSError) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise VaelabError(f"{self.path}: not a readable {self.kind} ({reason})") from None

    @contextmanager
    def _opened(self) -> Iterator[tuple[Any, int | None, Callable[[list[str] | None], Any]]]:
        import pyarrow as pa

        open_regular(self.path, f"a {self.kind}").close()  # no pipe or device is mapped
        with pa.memory_map(str(self.path)) as source:
            if self.parquet:
                yield from _parquet(self.path, source)
            else:
                yield from _ipc(source)


def _parquet(path: Path, source: Any) -> Iterator[tuple[Any, int, Callable[..., Any]]]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(source)
    limit = read_limit(FILE_LIMIT)

    def batches(columns: list[str] | None) -> Iterator[Any]:
        for group in range(file.num_row_groups):
            stored = _group_bytes(file.metadata.row_group(group), columns)
            if stored > limit:
                what = f"row group {group} of the columns read ({size_words(stored)})"
                raise too_large(path, what, limit)
            yield from file.iter_batches(batch_size=BATCH, row_groups=[group], columns=columns)

    yield file.schema_arrow, file.metadata.num_rows, batches


def _group_bytes(group: Any, columns: list[str] | None) -> int:
    """The bytes a Parquet row group's `columns` take when read (decompressed)."""
    chunks = (group.column(i) for i in range(group.num_columns))
    return sum(
        chunk.total_uncompressed_size
        for chunk in chunks
        if columns is None or _of_columns(chunk.path_in_schema, columns)
    )


def _of_columns(leaf: str, columns: list[str]) -> bool:
    """Whether a Parquet leaf column (``image.bytes``) belongs to one of `columns`."""
    return any(leaf == name or leaf.startswith(f"{name}.") for name in columns)


def _ipc(source: Any) -> Iterator[tuple[Any, None, Callable[..., Any]]]:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    file_format = source.read(6) == b"ARROW1"
    source.seek(0)
    reader = ipc.open_file(source) if file_format else ipc.open_stream(source)

    def batches(columns: list[str] | None) -> Iterator[Any]:
        stored = (
            (reader.get_batch(i) for i in range(reader.num_record_batches))
            if file_format
            else reader
        )
        for batch in stored:
            if columns is None:
                yield batch
                continue
            arrays = [batch.column(name) for name in columns]
            for array in arrays:
                array.validate(full=True)  # offsets read from the file stay inside it
            batch = pa.RecordBatch.from_arrays(arrays, names=columns)
            for start in range(0, batch.num_rows, BATCH):
                yield batch.slice(start, BATCH)

    yield reader.schema, None, batches


# ---------------------------------------------------------------- columns


@dataclass(frozen=True)
class Columns:
    """The image column, the label column (None: unlabelled) and the class names, of a file."""

    image: str
    label: str | None
    names: tuple[str, ...]

    @classmethod
    def of(cls, table: Table, config: DataConfig, first: Columns | None = None) -> Columns:
        """The columns read from `table`: found (see the module), or those of `first`, the
        first file, which every other file must hold with the same types and classes."""
        schema = table.schema()
        features = _features(schema, table.path)
        given = (first.image, first.label or "") if first is not None else config.columns
        image = given[0] if given else _image_column(schema, features, table.path)
        _check_column(schema, image, table.path, _is_image_type, _IMAGE_TYPES)
        if first is not None and first.label is None:
            return cls(image, None, ())
        label = None
        if config.labels:
            label = _label_column(schema, features, table.path, image, given[1:])
        if label is None:
            return cls(image, None, ())
        _check_column(schema, label, table.path, _is_label_type, "integer class indices")
        names = _class_names(features.get(label))
        if first is not None and names and first.names and names != first.names:
            raise VaelabError(
                f"{table.path}: the classes of {label} ({_few(names)}) are not those of "
                f"{first.label} in the first file ({_few(first.names)})"
            )
        return cls(image, label, names)

    @property
    def read(self) -> list[str]:
        """The columns to read, the image column first."""
        return [self.image] + ([] if self.label is None else [self.label])


def _features(schema: Any, path: Path) -> dict[str, dict[str, Any]]:
    """The top-level features the Hugging Face metadata of a schema describes, by column."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return {}
    info = parse_json(raw, f"{path} (its Hugging Face metadata)")
    features = info.get("info", {}).get("features") if isinstance(info, dict) else None
    if not isinstance(features, dict):
        return {}
    return {name: value for name, value in features.items() if isinstance(value, dict)}


def _image_column(schema: Any, features: dict[str, dict[str, Any]], path: Path) -> str:
    marked = [n for n in schema.names if features.get(n, {}).get("_type") == "Image"]
    found = marked or [n for n in schema.names if _is_image_type(schema.field(n).type)]
    if len(found) == 1:
        return str(found[0])
    if found:
        raise VaelabError(
            f"{path}: more than one image column ({', '.join(found)}); name the one to read with "
            "columns",
            parameters=("columns",),
        )
    raise VaelabError(
        f"{path}: no column of encoded images ({_IMAGE_TYPES}); it holds {_listing(schema)}; "
        "name the image column with columns",
        parameters=("columns",),
    )


def _label_column(
    schema: Any, features: dict[str, dict[str, Any]], path: Path, image: str,
    given: tuple[str, ...],
) -> str | None:  # fmt: skip
    if given:
        return given[0] or None
    marked = [n for n in schema.names
              if n != image and features.get(n, {}).get("_type") == "ClassLabel"]  # fmt: skip
    if len(marked) > 1:
        marked = [n for n in marked if n in _LABEL_NAMES] or marked
    if len(marked) > 1:
        raise VaelabError(
            f"{path}: more than one ClassLabel column ({', '.join(marked)}); name the labels with "
            "columns (the image column, then the label column), or ignore them (labels=False)",
            parameters=("columns", "labels"),
        )
    if marked:
        return str(marked[0])
    return next((name for name in _LABEL_NAMES if name in schema.names and name != image), None)


def _check_column(
    schema: Any, name: str, path: Path, fits: Callable[[Any], bool], expected: str
) -> None:
    if name not in schema.names:
        raise VaelabError(
            f"{path}: no column named {name!r}; it holds {_listing(schema)}",
            parameters=("columns",),
        )
    if schema.get_field_index(name) < 0:
        raise VaelabError(f"{path}: {schema.names.count(name)} columns named {name!r}")
    kind = schema.field(name).type
    if not fits(kind):
        images = expected == _IMAGE_TYPES
        hint = "" if images else ", or ignore the labels (labels=False)"
        raise VaelabError(
            f"{path}: column {name} holds {kind}, not {expected}; name another with columns{hint}",
            parameters=("columns",) if images else ("columns", "labels"),
        )


def _is_binary(kind: Any) -> bool:
    import pyarrow as pa

    views = getattr(pa.types, "is_binary_view", lambda _: False)
    return bool(pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or views(kind))


def _is_image_type(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _is_binary(kind.field(index).type)
    return _is_binary(kind)


def _is_label_type(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind))


def _class_names(feature: dict[str, Any] | None) -> tuple[str, ...]:
    names = (feature or {}).get("names") if (feature or {}).get("_type") == "ClassLabel" else None
    if isinstance(names, list) and names and all(isinstance(n, str) and n for n in names):
        return tuple(names)
    return ()


def _listing(schema: Any) -> str:
    shown = ", ".join(f"{field.name} ({field.type})" for field in list(schema)[:8])
    return shown + (f" and {len(schema) - 8} more" if len(schema) > 8 else "")


def _few(names: tuple[str, ...]) -> str:
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
