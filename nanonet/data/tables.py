"""Read labeled or unlabeled text from JSON Lines, CSV, TSV, Parquet or plain text.

Every problem is a one-line NanonetError naming the file and, where there is one, the
row (1-based, counting data rows; for CSV/TSV the header is row 0).
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.texts import decodable, decoded_lines, json_error, open_input

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".txt": "text"}


@dataclass
class Table:
    """Texts with their labels (None where the file has no labels)."""

    path: str
    texts: list[str]
    labels: list[str] | None

    def __len__(self) -> int:
        return len(self.texts)


def join_tables(tables: list[Table]) -> Table:
    """Several labeled files as one table, in order (a text labeled twice stays twice)."""
    if len(tables) == 1:
        return tables[0]
    labels = [label for t in tables for label in (t.labels or [])]
    return Table(" + ".join(t.path for t in tables), [x for t in tables for x in t.texts], labels)


def read_table(path: str | Path, text_col: str = "text", label_col: str | None = "label", need_labels: bool = False) -> Table:
    """Read one file. `label_col=None` reads text only; `need_labels` makes a missing label column an error."""
    path = Path(path)
    kind = _kind(path)
    if kind == "text":
        text_col, label_col = "text", None  # one text per line, no labels
    with _read_errors(path):
        return _collect(path, _READERS[kind](path, kind), text_col, label_col, need_labels)


def iter_texts(path: str | Path, text_col: str = "text") -> Iterator[str]:
    """The texts of one file, row by row, without holding the file: a pool too large to
    keep twice. The same checks and one-line errors as `read_table`."""
    path = Path(path)
    kind = _kind(path)
    text_col = "text" if kind == "text" else text_col
    with _read_errors(path):
        empty = True
        for i, row in enumerate(_READERS[kind](path, kind), start=1):
            empty = False
            yield _text_of(path, row, i, text_col)
        if empty:
            raise NanonetError(f"{path}: no rows")


def _kind(path: Path) -> str:
    """The reader a file takes, or a one-line error for a missing file, a directory or an unknown suffix."""
    if path.is_dir():
        raise NanonetError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise NanonetError(f"{path}: no such file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise NanonetError(f"{path}: unknown file type '{path.suffix}' (use {', '.join(sorted(SUFFIXES))})")
    return kind


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise NanonetError(f"{path}: cannot be read ({e.strerror or e})") from None
    except csv.Error as e:
        raise NanonetError(f"{path}: not valid CSV ({e})") from None


def _text_of(path: Path, row: dict, i: int, text_col: str) -> str:
    if text_col not in row:
        raise NanonetError(f"{path}: row {i}: missing column '{text_col}' (have: {', '.join(map(str, row)) or 'none'})")
    text = row[text_col]
    if not isinstance(text, str) or not text.strip():
        raise NanonetError(f"{path}: row {i}: empty text in column '{text_col}'")
    return text


def _collect(path: Path, rows, text_col: str, label_col: str | None, need_labels: bool) -> Table:
    texts: list[str] = []
    labels: list[str] | None = [] if label_col else None
    for i, row in enumerate(rows, start=1):
        texts.append(_text_of(path, row, i, text_col))
        if labels is not None:
            if label_col not in row or row[label_col] is None or str(row[label_col]).strip() == "":
                if i == 1 and label_col not in row and not need_labels:
                    labels = None  # an unlabeled file
                    continue
                raise NanonetError(f"{path}: row {i}: missing label in column '{label_col}'")
            labels.append(str(row[label_col]))
    if not texts:
        raise NanonetError(f"{path}: no rows")
    if need_labels and labels is None:
        raise NanonetError(f"{path}: missing column '{label_col}'")
    return Table(str(path), texts, labels)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded one at a time so that a bad byte names its
    line; a UTF-8 byte-order mark at the start is dropped."""
    with open_input(path) as raw:
        yield from decodable(path, decoded_lines(raw))


def _jsonl(path: Path, kind: str):
    for i, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise NanonetError(f"{path}: row {i}: {json_error(e)}") from None
        if not isinstance(row, dict):
            raise NanonetError(f"{path}: row {i}: expected a JSON object")
        yield row


def _csv(path: Path, kind: str):
    reader = csv.DictReader((line for _, line in _lines(path)), delimiter="\t" if kind == "tsv" else ",")
    if reader.fieldnames is None:
        return
    yield from reader


def _parquet(path: Path, kind: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise NanonetError(f"{path}: reading Parquet needs pyarrow (pip install 'nanonet[train]')") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise NanonetError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    yield from table.to_pylist()


def _text(path: Path, kind: str):
    for _, line in _lines(path):
        if line.strip():
            yield {"text": line.rstrip("\r\n")}


_READERS = {"jsonl": _jsonl, "csv": _csv, "tsv": _csv, "parquet": _parquet, "text": _text}
