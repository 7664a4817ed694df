"""Parameter-efficient training: which parameters a mode trains."""

from __future__ import annotations

import torch.nn as nn

from nanonet.model.encoder import NanoClassifier


def is_trainable(name: str, param: nn.Parameter, mode: str) -> bool:
    if mode == "all" or name.startswith("head."):
        return True
    if name.endswith(".bias"):
        return True
    if mode == "bias+norm" and param.dim() == 1 and "norm" in name:
        return True
    return False


def set_trainable(model: NanoClassifier, mode: str) -> tuple[int, int]:
    """Freeze everything the mode does not train; returns (trainable, total) parameter counts."""
    trainable = total = 0
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name, param, mode))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total
