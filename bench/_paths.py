"""How a results file names a path: never as an absolute path of the machine that ran it.

    portable(ROOT / "runs/demo/student")         -> "runs/demo/student"   (inside the repo)
    portable("/elsewhere/data/ag_news")          -> "data/ag_news@sha256:<12 hex digits>"
    portable("/elsewhere/RUN/student", digest=d) -> "RUN/student@sha256:<d[:12]>"

A path inside the repository is written relative to the repository root. Any other path
is written as its last two parts, plus the first 12 hex digits of a sha256 of its
content (`digest` when given, else the file's bytes, or for a directory every file's
relative path and bytes) when it exists, so the row still says which input it was.
Every bench script that records a path goes through `portable`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT = 12


def portable(path: str | Path, digest: str | None = None, hashed: bool = True) -> str:
    """`path` as a results file names it; `hashed=False` for an output (a run directory)."""
    p = Path(path).expanduser().resolve()
    if p.is_relative_to(ROOT):
        return p.relative_to(ROOT).as_posix()
    label = "/".join(p.parts[-2:])
    if hashed and digest is None and p.exists():
        digest = content_sha256(p)
    return f"{label}@sha256:{digest[:SHORT]}" if hashed and digest else label


def content_sha256(p: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative path and bytes, in path order)."""
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f is not p:
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
