"""`nanonet eval`: a checkpoint's accuracy, macro-F1 and per-class accuracy on a labeled file."""

from __future__ import annotations

import numpy as np
import torch

from nanonet.data.tables import read_table
from nanonet.data.tokens import tokenize
from nanonet.errors import NanonetError
from nanonet.model.checkpoint import load_checkpoint
from nanonet.train.metrics import accuracy, macro_f1, per_class_accuracy
from nanonet.train.trainer import predict


def evaluate_checkpoint(checkpoint: str, data: str, text_col: str = "text", label_col: str = "label", max_tokens: int = 16384) -> dict:
    ckpt = load_checkpoint(checkpoint)
    table = read_table(data, text_col, label_col, need_labels=True)
    index = {name: i for i, name in enumerate(ckpt.labels)}
    for row, label in enumerate(table.labels or [], start=1):
        if label not in index:
            raise NanonetError(f"{data}: row {row}: label '{label}' is not one of the checkpoint's labels ({', '.join(ckpt.labels)})")
    gold = np.array([index[label] for label in table.labels or []])
    tokens = tokenize(table.texts, ckpt.tokenizer_file, ckpt.model.config.max_length)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pred = predict(ckpt.model.to(device), tokens, max_tokens, device)
    k = len(ckpt.labels)
    per_class = per_class_accuracy(pred, gold, k)
    return {
        "checkpoint": checkpoint, "data": data, "n": len(gold),
        "accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, k),
        "per_class": {name: {"n": int((gold == c).sum()), "accuracy": per_class[c]} for c, name in enumerate(ckpt.labels)},
    }  # fmt: skip
