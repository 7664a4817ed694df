"""The torch-free classifier: tokenize, sort by length, pad each micro-batch to its own
longest text, run the backend, put results back in input order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanonet.runtimes.backends import open_backend
from nanonet.runtimes.bundle import Bundle, read_bundle
from nanonet.runtimes.errors import NanonetError


@dataclass
class Prediction:
    label: str
    score: float  # probability of `label`
    scores: dict[str, float]  # every label's probability

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "scores": self.scores}


@dataclass
class Stats:
    """Running counts of a classifier's work; `overhead_share` is what is not the model."""

    texts: int = 0
    truncated: int = 0  # texts cut to max_length
    batches: int = 0
    tokenize_s: float = 0.0
    model_s: float = 0.0
    total_s: float = 0.0

    def reset(self) -> None:
        self.__init__()

    @property
    def overhead_share(self) -> float:
        return (self.total_s - self.model_s) / self.total_s if self.total_s else 0.0


def check_texts(texts: Sequence[str]) -> list[str]:
    """A list of non-empty strings, or a one-line error naming the first bad item."""
    if isinstance(texts, str):
        raise NanonetError("texts: expected a list of strings, got one string (wrap it in a list)")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise NanonetError(f"texts[{i}]: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise NanonetError(f"texts[{i}]: empty text")
    return out


class Classifier:
    """A bundle ready to classify text: `predict(texts)`, `predict_proba(texts)`."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int | None = None):
        from tokenizers import Tokenizer

        self.bundle = bundle
        m = bundle.manifest
        self.labels, self.max_length = list(m.labels), int(m.max_length)
        try:
            self.tokenizer = Tokenizer.from_str(bundle.read_bytes("tokenizer.json").decode("utf-8"))
        except NanonetError:
            raise
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise NanonetError(f"{bundle.path / 'tokenizer.json'}: cannot load the tokenizer ({e})") from None
        self.tokenizer.no_padding()  # padding is per micro-batch, below
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id = int(m.export.get("pad_id", 0))
        self.backend = open_backend(bundle, backend, threads)
        self.stats = Stats()

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(N, C) float32 probabilities, rows in input order."""
        texts = check_texts(texts)
        if batch_size < 1:
            raise NanonetError(f"batch_size: must be >= 1, got {batch_size}")
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        tic = time.perf_counter()
        encodings = self.tokenizer.encode_batch(texts)
        self.stats.tokenize_s += time.perf_counter() - tic
        ids = [e.ids for e in encodings]
        self.stats.truncated += sum(1 for e in encodings if e.overflowing)
        for rows in length_batches([len(x) for x in ids], batch_size=batch_size):  # short with short: little padding
            feeds = self.pad([ids[i] for i in rows])
            t0 = time.perf_counter()
            logits = self.backend.run(feeds)
            self.stats.model_s += time.perf_counter() - t0
            out[rows] = softmax(logits.astype(np.float32))
            self.stats.batches += 1
        self.stats.texts += len(texts)
        self.stats.total_s += time.perf_counter() - tic
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Prediction]:
        """The most probable label of each text, with its score and every label's score."""
        probs = self.predict_proba(texts, batch_size)
        return [self._prediction(p) for p in probs]

    def _prediction(self, p: np.ndarray) -> Prediction:
        k = int(p.argmax())
        return Prediction(self.labels[k], float(p[k]), {label: float(s) for label, s in zip(self.labels, p)})

    def pad(self, rows: list[list[int]]) -> dict[str, np.ndarray]:
        """Token-id lists -> the model's padded inputs (right-padded to the longest row)."""
        return pad_rows(rows, self.pad_id)


def pad_rows(rows: list[list[int]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad token-id lists into the padded graph's inputs: input_ids, attention_mask,
    token_type_ids (all zero; a graph without that input ignores it)."""
    L = max(len(r) for r in rows)
    ids = np.full((len(rows), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), L), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def length_batches(lengths: Sequence[int], batch_size: int | None = None, max_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in length order (stable), cut into batches of `batch_size` rows or, with
    `max_tokens`, of as many rows as fit that many padded tokens (rows x the longest)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    if max_tokens is None:
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    batches, group = [], []
    for i in order:
        if group and (len(group) + 1) * lengths[i] > max_tokens:  # length order: the newest row is the longest
            batches.append(np.asarray(group))
            group = []
        group.append(i)
    if group:
        batches.append(np.asarray(group))
    return batches


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def load(path: str | Path, backend: str = "auto", threads: int | None = None) -> Classifier:
    """Open a bundle directory for inference (verifies every file's sha256 first)."""
    return Classifier(read_bundle(path), backend, threads)
