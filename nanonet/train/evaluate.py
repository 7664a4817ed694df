"""Running a classifier over tokenized texts: predictions, embeddings, accuracy, and
`nanonet eval`'s report on a labeled file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import torch

from nanonet.data.tables import read_table
from nanonet.data.tokens import Tokenized, budget_batches, tokenize
from nanonet.model.checkpoint import load_checkpoint
from nanonet.model.encoder import NanoClassifier, pool
from nanonet.model.packing import Packed
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.metrics import accuracy, macro_f1, per_class_accuracy
from nanonet.train.progress import Advance
from nanonet.train.views import packed_rows

# Token budget of a batch without gradients. On a GPU a large batch fills the device; on a
# CPU a 4,096-token batch embeds 1.2-1.35x faster than a 16,384-token one, whose
# activations fall out of the cache (bench/eval_batch.py, docs/tuning.md).
EVAL_TOKENS = {"cuda": 16384, "cpu": 4096}


def eval_tokens_for(device: torch.device) -> int:
    """The default token budget of evaluation batches on `device`."""
    return EVAL_TOKENS.get(device.type, EVAL_TOKENS["cpu"])


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on the CPU (fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def eval_batches(
    model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device, advance: Advance | None = None
) -> Iterator[tuple[np.ndarray, Packed]]:
    """(rows, packed batch on `device`) in length order, with `model` in eval mode, no grad
    and autocast on CUDA; the model's mode is restored afterwards. `advance` hears of each
    batch once its caller is done with it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device):
            for rows in budget_batches(tokens.lengths, max_tokens, rng=None):
                yield rows, packed_rows(tokens, rows).to(device)
                if advance:
                    advance(len(rows))
    finally:
        model.train(was_training)


def predict(model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device, advance: Advance | None = None) -> np.ndarray:
    """(N,) predicted class of each tokenized text, in row order."""
    pred = np.empty(len(tokens), dtype=np.int64)
    for rows, batch in eval_batches(model, tokens, max_tokens, device, advance):
        pred[rows] = model(batch).argmax(-1).cpu().numpy()
    return pred


def logits(model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device, advance: Advance | None = None) -> torch.Tensor:
    """(N, C) fp32 logits of tokenized texts, in row order, on the CPU."""
    out = torch.empty(len(tokens), model.head.out_features)
    for rows, batch in eval_batches(model, tokens, max_tokens, device, advance):
        out[torch.as_tensor(rows)] = model(batch).float().cpu()
    return out


def embed_and_logits(
    model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device, advance: Advance | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H) pooled embeddings and (N, C) logits of tokenized texts from one pass, in row order."""
    emb, out, _ = embed_with_branches(model, [], tokens, max_tokens, device, advance)
    return emb, out


def shared_layers(model: NanoClassifier, other: NanoClassifier) -> int:
    """How many leading layers `other` computes exactly as `model` does: the same token
    embeddings, then layer by layer the same kind of block, attention window and weights
    (a student made of the model's first layers and not yet trained). -1: not even the
    token embeddings are shared."""
    a, b = model.encoder, other.encoder
    if not _same_module(a.embeddings, b.embeddings):
        return -1
    shared = 0
    for mine, theirs in zip(a.layers, b.layers):
        if not (type(mine) is type(theirs) and mine.attn.window == theirs.attn.window and _same_module(mine, theirs)):
            break
        shared += 1
    return shared


def _same_module(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def embed_with_branches(
    model: NanoClassifier,
    branches: list[NanoClassifier],
    tokens: Tokenized,
    max_tokens: int,
    device: torch.device,
    advance: Advance | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """`embed_and_logits` of `model`, plus the (N, H) pooled embeddings of each branch
    model from the same pass: a branch whose first layers are `model`'s own (see
    `shared_layers`) runs only its remaining layers, on `model`'s hidden states after
    them (a student of layers 0,1,5 costs one layer, not three)."""
    shared = [shared_layers(model, b) for b in branches]
    emb = torch.empty(len(tokens), model.config.hidden_size)
    out = torch.empty(len(tokens), model.head.out_features)
    branch_emb = [torch.empty(len(tokens), b.config.hidden_size) for b in branches]
    modes = [b.training for b in branches]
    for b in branches:
        b.to(device).eval()
    try:
        for rows, batch in eval_batches(model, tokens, max_tokens, device, advance):
            index = torch.as_tensor(rows)
            encoder = model.encoder
            hidden = {0: encoder.embeddings(batch)}  # the states after the first i layers, where a branch leaves
            done = 0
            for i in sorted({n for n in shared if n > 0}):
                hidden[i] = encoder.run_layers(hidden[done], batch, done, i)
                done = i
            e = pool(encoder.final_norm(encoder.run_layers(hidden[done], batch, done)), batch, model.pooling)
            emb[index], out[index] = e.float().cpu(), model.head(e).float().cpu()  # eval mode: the head's dropout is off
            for b, n, dest in zip(branches, shared, branch_emb):
                if n < 0:
                    dest[index] = b.embed(batch).float().cpu()
                else:
                    y = b.encoder.final_norm(b.encoder.run_layers(hidden[n], batch, n))
                    dest[index] = pool(y, batch, b.pooling).float().cpu()
    finally:
        for b, mode in zip(branches, modes):
            b.train(mode)
    return emb, out, branch_emb


def embed(model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device, advance: Advance | None = None) -> torch.Tensor:
    """(N, H) pooled embeddings of tokenized texts, in row order."""
    out = torch.empty(len(tokens), model.config.hidden_size)
    for rows, batch in eval_batches(model, tokens, max_tokens, device, advance):
        out[torch.as_tensor(rows)] = model.embed(batch).float().cpu()
    return out


def evaluate(
    model: NanoClassifier,
    tokens: Tokenized,
    gold: list[int],
    num_classes: int,
    max_tokens: int,
    device: torch.device,
    advance: Advance | None = None,
) -> dict:
    """Accuracy and macro-F1 of `model` on tokenized texts (eval mode, no grad)."""
    if not len(gold):
        return {"accuracy": None, "macro_f1": None, "n": 0}
    pred = predict(model, tokens, max_tokens, device, advance)
    y = np.asarray(gold)
    return {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, num_classes), "n": len(y)}


def evaluate_checkpoint(
    checkpoint: str, data: str, text_col: str = "text", label_col: str = "label", max_tokens: int | None = None
) -> dict:
    """`nanonet eval`: a checkpoint's accuracy, macro-F1 and per-class accuracy on a labeled file."""
    ckpt = load_checkpoint(checkpoint)
    table = read_table(data, text_col, label_col, need_labels=True)
    index = {name: i for i, name in enumerate(ckpt.labels)}
    for row, label in enumerate(table.labels or [], start=1):
        if label not in index:
            raise NanonetError(f"{data}: row {row}: label '{label}' is not one of the checkpoint's labels ({', '.join(ckpt.labels)})")
    gold = np.array([index[label] for label in table.labels or []])
    tokens = tokenize(table.texts, ckpt.tokenizer_file, ckpt.model.config.max_length)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pred = predict(ckpt.model.to(device), tokens, max_tokens or eval_tokens_for(device), device)
    k = len(ckpt.labels)
    per_class = per_class_accuracy(pred, gold, k)
    return {
        "checkpoint": checkpoint,
        "data": data,
        "n": len(gold),
        "accuracy": accuracy(pred, gold),
        "macro_f1": macro_f1(pred, gold, k),
        "per_class": {name: {"n": int((gold == c).sum()), "accuracy": per_class[c]} for c, name in enumerate(ckpt.labels)},
    }
