"""The optimizer and learning-rate schedule of a cohort."""

from __future__ import annotations

import torch

from nanonet.train.args import TrainArgs
from nanonet.train.cohort import Cohort


def default_lr(lr: float | None, trainable: str) -> float:
    """The encoder learning rate: as given, else 5e-5 for full fine-tuning and 3e-3 for bias-only."""
    return lr if lr is not None else (5e-5 if trainable == "all" else 3e-3)


def build_optimizer(cohort: Cohort, args: TrainArgs, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with three groups (teacher encoder, students' encoders, heads and projections),
    a linear warm-up over `args.warmup` of the steps, then linear decay to 0."""
    heads, teacher, students = [], [], []
    for name, p in cohort.named_parameters():
        if p.requires_grad:
            if ".head." in f".{name}" or name.startswith("projections."):
                heads.append(p)
            else:
                (teacher if name.startswith("teacher.") else students).append(p)
    groups = [
        {"params": teacher, "lr": default_lr(args.teacher_lr, args.teacher_trainable)},
        {"params": students, "lr": default_lr(args.lr, args.trainable)},
        {"params": heads, "lr": args.head_lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=args.weight_decay)
    warm = max(1, int(args.warmup * steps))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_then_decay(s, warm, steps))


def warmup_then_decay(step: int, warm: int, steps: int) -> float:
    """The learning-rate factor of step `step` (from 0): linear warm-up over `warm` steps,
    then linear decay to 0 at `steps`."""
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (steps - step) / max(1, steps - warm))
