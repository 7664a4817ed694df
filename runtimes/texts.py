"""Stream texts from JSON Lines, CSV/TSV or plain-text files, one record at a time.

A large input never sits in memory whole. A malformed record does not stop the stream:
it comes out as a `Record` with `error` set, naming its line, so a caller can report it
and go on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nanonet.runtimes.errors import NanonetError

KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "text"}


@dataclass
class Record:
    line: int  # 1-based line (for CSV/TSV: the data row, the header being row 0)
    text: str | None
    label: str | None = None
    error: str | None = None


def file_kind(path: Path) -> str:
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise NanonetError(f"{path}: unknown file type '{path.suffix}' (use {', '.join(sorted(KINDS))})")
    return kind


def iter_records(
    path: str | Path, text_col: str = "text", label_col: str | None = None, progress: callable | None = None
) -> Iterator[Record]:
    """Yield a Record per input line. `progress(bytes_read)` is called as the file is read."""
    path = Path(path)
    if not path.is_file():
        raise NanonetError(f"{path}: no such file")
    kind = file_kind(path)
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise NanonetError(f"{path}: cannot be read ({e.strerror or e})") from None
    with raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        lines = _lines(f, raw, progress)
        if kind == "text":
            for n, line in lines:
                text = line.rstrip("\r\n")
                yield Record(n, text) if text.strip() else Record(n, None, error="empty line")
        elif kind == "jsonl":
            yield from _jsonl(lines, text_col, label_col)
        else:
            yield from _csv(path, lines, text_col, label_col, "\t" if kind == "tsv" else ",")


def _lines(f, raw, progress) -> Iterator[tuple[int, str]]:
    n = 0
    while True:
        try:
            line = f.readline()
        except UnicodeDecodeError as e:
            raise NanonetError(f"{raw.name}: line {n + 1}: not UTF-8 text ({e.reason})") from None
        if not line:
            return
        n += 1
        if progress is not None and n % 256 == 0:
            progress(raw.tell())
        yield n, line


def _check(n: int, text, label_col: str | None, row: dict) -> Record:
    if not isinstance(text, str) or not text.strip():
        return Record(
            n, None, error="empty text" if isinstance(text, str) or text is None else f"text is {type(text).__name__}, not a string"
        )
    label = None
    if label_col is not None and row.get(label_col) is not None:
        label = str(row[label_col])
    return Record(n, text, label)


def _jsonl(lines, text_col: str, label_col: str | None) -> Iterator[Record]:
    for n, line in lines:
        if not line.strip():
            yield Record(n, None, error="empty line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield Record(n, None, error=f"not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            yield Record(n, None, error="not a JSON object")
        elif text_col not in row:
            yield Record(n, None, error=f"missing column '{text_col}'")
        else:
            yield _check(n, row[text_col], label_col, row)


def _csv(path: Path, lines, text_col: str, label_col: str | None, delimiter: str) -> Iterator[Record]:
    # csv.reader pulls more lines itself for quoted cells that span lines
    reader = csv.reader((line for _, line in lines), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as e:
        raise NanonetError(f"{path}: header: not valid CSV ({e})") from None
    if text_col not in header:
        raise NanonetError(f"{path}: no column '{text_col}' in the header (have: {', '.join(header)})")
    n = 0
    while True:
        n += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield Record(n, None, error=f"not valid CSV ({e})")
            continue
        if len(cells) != len(header):
            yield Record(n, None, error=f"{len(cells)} cells for {len(header)} columns")
            continue
        row = dict(zip(header, cells))
        yield _check(n, row[text_col], label_col, row)
