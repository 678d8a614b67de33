"""Reading data files row by row, so that every error names ``FILE:LINE``.

JSONL and JSON are parsed here, not through Arrow: a bad row is then named by the line an editor
shows (1-based), a byte that is not UTF-8 by its line and position, and rows of mixed shapes are
not forced into one schema inferred from the first rows. Parquet and hub tables have no lines:
their rows are ``SOURCE row N``, counted from 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping


class DataError(ValueError):
    """A data file or row that cannot be used; the message starts with ``FILE:LINE``."""


def read_rows(path: Path) -> list[Any]:
    """The rows of a .jsonl, .json (a list) or .parquet file (see :func:`read_located_rows`)."""
    return [row for _, row in read_located_rows(path)]


def read_located_rows(path: Path) -> list[tuple[str, Any]]:
    """``(where, row)`` for each row of a .jsonl, .json (a list) or .parquet file, ``where`` being
    ``FILE:LINE`` (1-based, as editors count; ``FILE row N`` for parquet). A line that is not
    UTF-8 or not JSON raises a :class:`DataError` that names its line."""
    path = Path(path)
    if path.suffix == ".parquet":
        import datasets  # pyarrow and pandas: loaded only for a parquet file

        try:
            rows = list(datasets.Dataset.from_parquet(str(path)))
        except Exception as e:
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        return [(f"{path} row {n}", row) for n, row in enumerate(rows, 1)]
    if path.suffix == ".json":
        return read_json_list(path)
    # JSONL is parsed line by line rather than through Arrow: a bad line is then reported by its
    # number, and rows whose golden_answers mix types do not break a schema inferred from the first.
    return [(f"{path}:{n}", row) for n, row in iter_jsonl(path)]


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, decoded JSON)`` for each non-blank line; bytes are decoded line by line so
    a stray Latin-1 byte is reported as ``FILE:LINE`` with its position."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark, as some Windows editors write
            if not raw.strip():
                continue
            yield n, decode_json_line(raw, f"{path}:{n}")


def decode_json_line(raw: bytes, where: str) -> Any:
    """One line of bytes → its JSON value; ``where`` (``FILE:LINE``) starts any error."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: {_not_utf8(raw, e, e.start + 1)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None


def _not_utf8(data: bytes, e: UnicodeDecodeError, column: int) -> str:
    return (f"not UTF-8 text: byte {data[e.start]:#04x} at byte {column} of the line "
            f"({e.reason}); the file may be Latin-1 or cp1252, save it as UTF-8")


def read_json_list(path: Path) -> list[tuple[str, Any]]:
    """A .json file holding a list of rows → ``(FILE:LINE, row)``, the line where each row starts."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: {_not_utf8(data, e, column)}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, list):
        raise DataError(f"{path}:1: expected a JSON list of rows, got {type(value).__name__}")
    # the text is valid JSON: walk the list once more to learn the line where each row starts
    decoder, out = json.JSONDecoder(), []
    pos, line, counted = text.index("[") + 1, 1, 0
    for _ in value:
        while text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", counted, pos)
        counted = pos
        row, pos = decoder.raw_decode(text, pos)
        out.append((f"{path}:{line}", row))
    return out


def located_rows(spec: str, limit: int = 0, *, bundled: Mapping[str, Callable[[int, int], list]] | None = None,
                 seed: int = 0) -> list[tuple[str, Any]]:
    """``(where, row)`` for each row of a data source: a name in ``bundled`` (a generator
    ``(n, seed) -> rows``), ``hf:owner/name[:split]``, or a .jsonl / .json / .parquet file.
    ``where`` is ``FILE:LINE`` for JSONL / JSON files, ``SOURCE row N`` (from 1) for tables."""
    bundled = bundled or {}
    if spec in bundled:
        return _numbered(spec, bundled[spec](limit or 256, seed))
    if spec.startswith("hf:"):
        import datasets

        name, _, split = spec[3:].partition(":")
        try:
            ds = datasets.load_dataset(name, split=split or "train")
        except Exception as e:  # offline, unknown name, no such split: one readable message
            raise FileNotFoundError(f"hub dataset {name!r} (split {split or 'train'!r}) could not be "
                                    f"loaded: {type(e).__name__}: {e}") from None
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"data source {spec!r} is not a file, a bundled name "
                                    f"({', '.join(sorted(bundled)) or 'none'}) or hf:owner/name[:split]")
        if path.suffix in (".jsonl", ".json"):
            # read here, not through Arrow: a bad row is named by its line, and rows of mixed
            # shapes are not forced into one schema inferred from the first rows
            rows = read_located_rows(path)
            return rows[:limit] if limit else rows
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: expected a .jsonl, .json or .parquet file")
        import datasets

        try:
            ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        except Exception as e:
            raise ValueError(f"{path}: could not be read as parquet: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    return _numbered(spec, [dict(r) for r in ds])


def _numbered(source: str, rows: list[Any]) -> list[tuple[str, Any]]:
    return [(f"{source} row {n}", row) for n, row in enumerate(rows, 1)]
