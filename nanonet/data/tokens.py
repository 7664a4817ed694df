"""Tokenize once (cached by content hash) and form batches by a token budget.

Token ids are kept as one flat int32 array plus offsets; a batch is a list of row
indices whose lengths sum to at most the budget, drawn from length-sorted buckets so
that a padded model would waste little, and a packed one wastes nothing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_DIR = Path(os.environ.get("NANONET_CACHE", Path.home() / ".cache" / "nanonet")) / "tokens"


@dataclass
class Tokenized:
    """Token ids of many texts: row i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (n+1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def select(self, rows: np.ndarray) -> Tokenized:
        """The given rows, in that order."""
        parts = [self.row(int(i)) for i in rows]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]).astype(np.int64)
        return Tokenized(np.concatenate(parts) if parts else np.zeros(0, np.int32), offsets)

    def then(self, other: Tokenized) -> Tokenized:
        """These rows followed by `other`'s."""
        return Tokenized(np.concatenate([self.ids, other.ids]), np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]))


def tokenize(texts: list[str], tokenizer_file: Path, max_length: int, cache: bool = True) -> Tokenized:
    """Tokenize with truncation to `max_length`; reuse a cached result for the same texts,
    tokenizer and length (the cache is keyed by a sha256 of all three)."""
    from tokenizers import Tokenizer

    tokenizer_bytes = Path(tokenizer_file).read_bytes()
    h = hashlib.sha256(tokenizer_bytes)
    h.update(str(max_length).encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    path = CACHE_DIR / f"{h.hexdigest()}.npz"
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return Tokenized(f["ids"], f["offsets"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry: tokenize again and overwrite it
    tok = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
    tok.no_padding()
    tok.enable_truncation(max_length)
    encodings = tok.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32, count=int(offsets[-1]))
    result = Tokenized(ids, offsets)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=ids, offsets=offsets)
        os.replace(tmp, path)
    return result


def budget_batches(lengths: np.ndarray, max_tokens: int, rng: np.random.Generator | None, bucket_batches: int = 64) -> list[np.ndarray]:
    """Split rows into batches of at most `max_tokens` real tokens (a longer row is alone).

    With an rng: shuffle, sort by length within buckets of about `bucket_batches`
    batches, then shuffle the batches; without: one pass in length order (evaluation)."""
    n = len(lengths)
    if rng is None:
        return _greedy(np.argsort(lengths, kind="stable"), lengths, max_tokens)
    order = rng.permutation(n)
    mean = max(1.0, float(lengths.mean())) if n else 1.0
    bucket = max(1, int(bucket_batches * max_tokens / mean))
    batches: list[np.ndarray] = []
    for start in range(0, n, bucket):
        chunk = order[start : start + bucket]
        batches += _greedy(chunk[np.argsort(lengths[chunk], kind="stable")], lengths, max_tokens)
    return [batches[i] for i in rng.permutation(len(batches))]


def _greedy(sorted_rows: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    batches, start, used = [], 0, 0
    for k, row in enumerate(sorted_rows):
        length = int(lengths[row])
        if used + length > max_tokens and k > start:
            batches.append(sorted_rows[start:k])
            start, used = k, 0
        used += length
    if start < len(sorted_rows):
        batches.append(sorted_rows[start:])
    return batches


def padding_share(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of a padded batch's positions that would be padding: what packing avoids."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - real / padded if padded else 0.0


class BatchStream:
    """An endless, seed-determined sequence of budget batches: epoch e is shuffled with
    rng(seed, salt, e), so batch k is the same whether a run started at 0 or resumed.

    With `rows` the stream draws only those rows of a larger set (`lengths` are theirs, in
    that order) and its batches name them by their index in the larger set."""

    def __init__(self, lengths: np.ndarray, max_tokens: int, seed: int, salt: int, rows: np.ndarray | None = None):
        self.lengths, self.max_tokens, self.seed, self.salt = lengths, max_tokens, seed, salt
        self.rows = rows
        self._epochs: list[list[np.ndarray]] = []

    def epoch(self, e: int) -> list[np.ndarray]:
        while len(self._epochs) <= e:
            rng = np.random.default_rng([self.seed, self.salt, len(self._epochs)])
            batches = budget_batches(self.lengths, self.max_tokens, rng)
            self._epochs.append(batches if self.rows is None else [self.rows[b] for b in batches])
        return self._epochs[e]

    def __getitem__(self, k: int) -> np.ndarray:
        e = 0
        while k >= len(self.epoch(e)):
            k -= len(self.epoch(e))
            e += 1
        return self.epoch(e)[k]

    def batches_per_epoch(self) -> int:
        return len(self.epoch(0))
