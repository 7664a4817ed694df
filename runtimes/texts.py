"""Stream texts from JSON Lines, CSV/TSV or plain-text files, one record at a time.

A large input never sits in memory whole. A malformed record does not stop the stream:
it comes out as a `Record` with `error` set, naming its line, so a caller can report it
and go on.
"""

from __future__ import annotations

import codecs
import csv
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
    raw = open_input(path)
    kind = file_kind(path)
    with raw:
        lines = decoded_lines(raw, progress)
        if kind == "text":
            for n, line in lines:
                if isinstance(line, UnicodeDecodeError):
                    yield Record(n, None, error=not_utf8(line))
                    continue
                text = line.rstrip("\r\n")
                yield Record(n, text) if text.strip() else Record(n, None, error="empty line")
        elif kind == "jsonl":
            yield from _jsonl(lines, text_col, label_col)
        else:
            yield from _csv(path, lines, text_col, label_col, "\t" if kind == "tsv" else ",")


def open_input(path: Path):
    """The file opened for reading in binary, or a one-line error saying why it cannot be."""
    if path.is_dir():
        raise NanonetError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise NanonetError(f"{path}: no such file")
    try:
        return open(path, "rb")
    except OSError as e:
        raise NanonetError(f"{path}: cannot be read ({e.strerror or e})") from None


def decoded_lines(raw, progress: callable | None = None) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """(line number, text) per line of a binary file, each line decoded alone so that a bad
    byte is reported on its own line (the error in place of the text) and the rest still
    read; a UTF-8 byte-order mark at the start is dropped."""
    for n, data in enumerate(iter(raw.readline, b""), start=1):
        if n == 1 and data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        if progress is not None and n % 256 == 0:
            progress(raw.tell())
        try:
            yield n, data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield n, e


def not_utf8(e: UnicodeDecodeError) -> str:
    return f"not UTF-8 text ({e.reason} at byte {e.start + 1} of the line)"


def json_error(e: json.JSONDecodeError) -> str:
    return f"not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})"  # "Invalid control character at"


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
        if isinstance(line, UnicodeDecodeError):
            yield Record(n, None, error=not_utf8(line))
            continue
        if not line.strip():
            yield Record(n, None, error="empty line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield Record(n, None, error=json_error(e))
            continue
        if not isinstance(row, dict):
            yield Record(n, None, error="not a JSON object")
        elif text_col not in row:
            yield Record(n, None, error=f"missing column '{text_col}'")
        else:
            yield _check(n, row[text_col], label_col, row)


def decodable(path: Path, lines) -> Iterator[tuple[int, str]]:
    """`decoded_lines` where a line that is not UTF-8 stops the file, naming the line."""
    for n, line in lines:
        if isinstance(line, UnicodeDecodeError):
            raise NanonetError(f"{path}: line {n}: {not_utf8(line)}")
        yield n, line


def _csv(path: Path, lines, text_col: str, label_col: str | None, delimiter: str) -> Iterator[Record]:
    # csv.reader pulls more lines itself for quoted cells that span lines, so a line it
    # cannot decode stops the file (naming the line) rather than becoming a record
    reader = csv.reader((line for _, line in decodable(path, lines)), delimiter=delimiter)
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
