"""Calibration texts: unlabeled text from a file, sampled to N with a seed, streamed."""

from __future__ import annotations

import random
from pathlib import Path

from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.texts import iter_records


def sample_texts(path: str | Path, n: int, seed: int = 0, text_col: str = "text") -> list[str]:
    """Up to `n` texts drawn uniformly from the file (reservoir sampling: one pass, n in memory).

    Returned in random order: quantization holds out the first half to check agreement, and
    a short file kept in file order (sorted by class, say) would hold out other texts than
    it calibrates on. Malformed lines are skipped; a file with no usable text is a one-line
    error."""
    if n < 1:
        raise NanonetError(f"--samples: must be >= 1, got {n}")
    rng = random.Random(seed)
    reservoir: list[str] = []
    seen = 0
    first_error = None
    for rec in iter_records(path, text_col):
        if rec.text is None:
            first_error = first_error or f"line {rec.line}: {rec.error}"
            continue
        seen += 1
        if len(reservoir) < n:
            reservoir.append(rec.text)
        else:
            j = rng.randrange(seen)
            if j < n:
                reservoir[j] = rec.text
    if not reservoir:
        why = f"; {first_error}" if first_error else ""
        raise NanonetError(f"{path}: no calibration text in it (empty, or no '{text_col}' values{why})")
    rng.shuffle(reservoir)
    return reservoir
