"""A pool file embedded by a model, streamed in chunks: unit-norm embeddings, text keys
(`picking.text_key`) and, for a next round, the committee's class probabilities. The texts
themselves are not kept; `texts_at` reads the picked rows back in a second pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanonet.active.picking import text_key
from nanonet.data.tables import iter_texts
from nanonet.data.tokens import tokenize
from nanonet.model.encoder import NanoClassifier
from nanonet.train.evaluate import embed, embed_and_logits, logits
from nanonet.train.progress import Advance

CHUNK = 4096  # texts tokenized and embedded at a time


@dataclass
class Embedded:
    vectors: np.ndarray  # (N, H) float32, unit norm
    keys: np.ndarray  # (N,) int64 text keys
    probs: np.ndarray | None = None  # (N, C) mean class probabilities of the committee

    def __len__(self) -> int:
        return len(self.keys)


def count_texts(path: str | Path, text_col: str) -> int:
    """Rows of the pool (a first pass, so the progress bar knows its total)."""
    return sum(1 for _ in iter_texts(path, text_col))


def chunks(texts: Iterator[str], size: int = CHUNK) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def embed_texts(
    texts: Iterator[str],
    model: NanoClassifier,
    tokenizer_file: Path,
    max_length: int,
    max_tokens: int,
    device: torch.device,
    committee: list[NanoClassifier] | None = None,
    advance: Advance | None = None,
) -> Embedded:
    """Embed `texts` with `model`'s pooled embeddings. With a `committee` (the model first),
    also the mean of its members' softmax probabilities."""
    vectors, keys, probs = [], [], []
    for chunk in chunks(texts):
        tokens = tokenize(chunk, tokenizer_file, max_length, cache=False)
        keys.append(np.array([text_key(t) for t in chunk], dtype=np.int64))
        if committee:
            emb, first = embed_and_logits(model, tokens, max_tokens, device)
            p = first.softmax(-1)
            for other in committee[1:]:
                p = p + logits(other, tokens, max_tokens, device).softmax(-1)
            probs.append((p / len(committee)).numpy())
        else:
            emb = embed(model, tokens, max_tokens, device)
        vectors.append(torch.nn.functional.normalize(emb, dim=-1).numpy())
        if advance:
            advance(len(chunk))
    return Embedded(
        np.concatenate(vectors).astype(np.float32, copy=False),
        np.concatenate(keys),
        np.concatenate(probs).astype(np.float32, copy=False) if probs else None,
    )


def centred(pool: Embedded, *others: Embedded | None) -> None:
    """Subtract the pool's mean embedding from the pool and `others`, then renormalise, in
    place. Encoders' embeddings share a common direction (all of a raw BERT's are within a
    few degrees of each other), which would make every text a near-duplicate of every
    other; centred, similarity measures what tells texts apart (Mu and Viswanath, "All-but-
    the-top", ICLR 2018)."""
    mean = pool.vectors.mean(0)
    for e in (pool, *others):
        if e is not None:
            v = e.vectors - mean
            e.vectors = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def texts_at(path: str | Path, text_col: str, rows: list[int]) -> dict[int, str]:
    """The texts of pool rows `rows` (0-based), read in a second pass over the file."""
    wanted = set(rows)
    found = {}
    for i, text in enumerate(iter_texts(path, text_col)):
        if i in wanted:
            found[i] = text
            if len(found) == len(wanted):
                break
    return found
