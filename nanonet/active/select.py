"""`nanonet select`, step by step: embed the pool (and the texts already labeled), pick,
read the picked texts back and write them for a person to label.

Cold start embeds with the teacher, as label propagation does; a next round embeds with
the trained model and scores each text by its committee's margin (the student, plus the
run's teacher when RUN/teacher sits beside RUN/student).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanonet.active import PRECISIONS
from nanonet.active.picking import Pick, cold_start, next_round
from nanonet.active.pool import Embedded, centred, count_texts, embed_texts, texts_at
from nanonet.data.tables import iter_texts
from nanonet.model.checkpoint import is_checkpoint, load_checkpoint
from nanonet.model.encoder import NanoClassifier
from nanonet.model.hf import load_pretrained
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import atomic_write_text
from nanonet.train.evaluate import eval_tokens_for
from nanonet.train.progress import phase_bar


@dataclass
class Embedder:
    """The model that embeds (and, with a committee, scores) texts, and how it tokenizes."""

    model: NanoClassifier
    tokenizer_file: Path
    max_length: int
    committee: list[NanoClassifier] | None  # next round: the model, then the run's teacher if kept
    source: str


def teacher_embedder(spec: str, max_length: int) -> Embedder:
    """Cold start: the pretrained teacher's pooled embeddings, cut at `max_length` tokens as training cuts them."""
    src = load_pretrained(spec)
    model = NanoClassifier(src.encoder, 1, src.pooling).eval()
    return Embedder(model, src.tokenizer_file, min(src.encoder.config.max_length, max_length), None, spec)


def model_embedder(path: str) -> Embedder:
    """Next round: a trained checkpoint; its run's teacher joins the committee when it is beside it
    with the same labels."""
    ckpt = load_checkpoint(path)
    committee = [ckpt.model]
    sibling = Path(path).resolve().parent / "teacher"
    if sibling != Path(path).resolve() and is_checkpoint(sibling):
        teacher = load_checkpoint(sibling)
        if teacher.labels == ckpt.labels:
            committee.append(teacher.model)
    return Embedder(ckpt.model, ckpt.tokenizer_file, ckpt.model.config.max_length, committee, path)


def int8_linear(model: NanoClassifier) -> NanoClassifier:
    """A copy of `model` whose linear layers run in int8 on the CPU: weights quantized per
    output channel, activations per batch as they arrive (dynamic quantization). On a 2-core
    AVX2 CPU the teacher embeds 2.3x faster this way and the picks are as good on dev
    (bench/select_variants.py, docs/select.md)."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's notice that the API is moving to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig})


def with_precision(embedder: Embedder, precision: str, device: torch.device) -> Embedder:
    """`embedder` with its models in `precision` on the CPU; on a GPU evaluation runs under bf16 autocast either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
    if precision == "fp32" or device.type != "cpu":
        return embedder
    committee = [int8_linear(m.eval()) for m in embedder.committee] if embedder.committee else None
    model = committee[0] if committee else int8_linear(embedder.model.eval())
    return Embedder(model, embedder.tokenizer_file, embedder.max_length, committee, embedder.source)


def select(
    pool: str,
    budget: int,
    out: str,
    embedder: Embedder,
    labeled: list[str] | None = None,
    seed: int = 1,
    text_col: str = "text",
    label_col: str = "label",
    progress: bool = True,
    precision: str = "int8",
) -> dict:
    """Pick `budget` texts of `pool` to label and write them to `out` (JSON Lines); returns the summary."""
    tic = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    embedder = with_precision(embedder, precision, device)
    embedder.model.to(device)
    for member in embedder.committee or []:
        member.to(device).eval()
    total = count_texts(pool, text_col)
    if total < budget:
        raise NanonetError(f"--budget {budget}: {pool} holds {total} texts, fewer than the budget")
    max_tokens = eval_tokens_for(device)
    known = _embed_labeled(labeled, text_col, embedder, max_tokens, device)
    with phase_bar(progress, "embed pool", total, "texts") as advance:
        pooled = embed_texts(
            iter_texts(pool, text_col),
            embedder.model,
            embedder.tokenizer_file,
            embedder.max_length,
            max_tokens,
            device,
            embedder.committee,
            advance,
        )
    embedded = time.perf_counter() - tic
    centred(pooled, known)
    pick = _pick(pooled, known, budget, seed, embedder.committee is not None, pool)
    texts = texts_at(pool, text_col, pick.rows)
    _write(out, pick, texts, text_col, label_col, "uncertainty" if embedder.committee else "centre_similarity")
    strategy = "next round (uncertainty + diversity)" if embedder.committee else "cold start (k-means representatives)"
    return {
        "out": out,
        "pool": pool,
        "strategy": strategy,
        "model": embedder.source,
        "committee": len(embedder.committee) if embedder.committee else None,
        "budget": budget,
        "picked": len(pick.rows),
        "pool_texts": total,
        "distinct_texts": int(len(np.unique(pooled.keys))),
        "already_labeled": len(known) if known is not None else 0,
        "clusters": pick.clusters,
        "seed": seed,
        "precision": precision if device.type == "cpu" else "bf16 autocast",
        "seconds": round(time.perf_counter() - tic, 1),
        "embedding_seconds": round(embedded, 1),
    }


def _embed_labeled(labeled: list[str] | None, text_col: str, embedder: Embedder, max_tokens: int, device: torch.device) -> Embedded | None:
    """The texts already labeled (any row of the files, labeled yet or not): never picked again, nor their near-duplicates."""
    if not labeled:
        return None
    texts = (text for f in labeled for text in iter_texts(f, text_col))
    return embed_texts(texts, embedder.model, embedder.tokenizer_file, embedder.max_length, max_tokens, device)


def _pick(pooled: Embedded, known: Embedded | None, budget: int, seed: int, by_uncertainty: bool, pool: str) -> Pick:
    labeled = (known.vectors, known.keys) if known is not None else (None, None)
    try:
        if by_uncertainty:
            assert pooled.probs is not None
            return next_round(pooled.vectors, pooled.keys, pooled.probs, budget, seed, *labeled)
        return cold_start(pooled.vectors, pooled.keys, budget, seed, *labeled)
    except ValueError as e:
        raise NanonetError(f"--budget {budget}: {pool}: {e}") from None


def _write(out: str, pick: Pick, texts: dict[int, str], text_col: str, label_col: str, score_name: str) -> None:
    """One JSON object per picked text, in the order to label them: the text, an empty label
    to fill in, its 1-based row in the pool, and why it was picked."""
    lines = [
        json.dumps({text_col: texts[row], label_col: "", "pool_row": row + 1, score_name: round(score, 4)}, ensure_ascii=False)
        for row, score in zip(pick.rows, pick.scores)
    ]
    atomic_write_text(out, "\n".join(lines) + "\n")
