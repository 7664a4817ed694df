"""The loss terms of one NanoNet step, each a plain function of logits (or states)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on labeled text."""
    return F.cross_entropy(logits, labels)


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at temperature T, scaled by T^2 so its gradient keeps its size."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher.detach() / t, -1), log_target=True, reduction="batchmean") * t * t


def self_training(logits: torch.Tensor, targets: torch.Tensor, confidence: float) -> torch.Tensor:
    """Cross-entropy against the argmax of `targets` where its probability is at least
    `confidence` (pseudo-labels from a clean view, learned on a perturbed one); 0 if none is."""
    probs = targets.detach().softmax(-1)
    top, pseudo = probs.max(-1)
    keep = (top >= confidence).float()
    per_row = F.cross_entropy(logits, pseudo, reduction="none")
    return (per_row * keep).sum() / max(1.0, float(len(keep)))


def propagated(logits: torch.Tensor, probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the argmax of propagated label distributions, each row weighted
    by its certainty, normalised by the weights' sum (at least 1, so that a batch of nearly
    uncertain rows pulls little rather than as hard as a certain one); 0 when every weight is 0."""
    per_row = F.cross_entropy(logits, probs.argmax(-1), reduction="none")
    return (per_row * weights).sum() / weights.sum().clamp_min(1.0)


def hidden_distillation(student_states: torch.Tensor, teacher_states: torch.Tensor, projection: torch.nn.Module) -> torch.Tensor:
    """MSE between projected student states and the teacher's (same packed tokens)."""
    return F.mse_loss(projection(student_states), teacher_states.detach())


def embedding_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine between the student's pooled embeddings and the teacher's (same
    rows): the direction, not the length, is what the fitted heads and the kNN graph read."""
    return (1 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)).mean()


def mutual(student: torch.Tensor, peers: list[torch.Tensor], kind: str = "mse") -> torch.Tensor:
    """Each student against its detached peers: MSE of probabilities, or KL(peer || student)."""
    if not peers:
        return student.new_zeros(())
    terms = []
    for peer in peers:
        if kind == "mse":
            terms.append(F.mse_loss(student.softmax(-1), peer.detach().softmax(-1)))
        else:
            terms.append(F.kl_div(F.log_softmax(student, -1), F.log_softmax(peer.detach(), -1), log_target=True, reduction="batchmean"))
    return torch.stack(terms).mean()


def ramp(step: int, total: int, fraction: float) -> float:
    """Linear ramp from 0 to 1 over the first `fraction` of `total` steps."""
    if fraction <= 0:
        return 1.0
    return min(1.0, step / max(1.0, fraction * total))
