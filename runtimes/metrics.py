"""Accuracy, macro-F1 and agreement (numpy only): one definition for training, quantization and validation."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else float("nan")


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Mean over classes of F1; a class absent from both gold and predictions is skipped."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def per_class_accuracy(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> list[float | None]:
    return [float((pred[gold == c] == c).mean()) if (gold == c).any() else None for c in range(num_classes)]


def agreement(probs: np.ndarray, ref: np.ndarray) -> float:
    """The share of rows whose most probable class is the same in `probs` and `ref` ((N, C) each)."""
    return float((probs.argmax(-1) == ref.argmax(-1)).mean())
