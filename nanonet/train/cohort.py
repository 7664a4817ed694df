"""The cohort: a teacher and K students, and the losses of one NanoNet step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from nanonet.model.encoder import NanoClassifier
from nanonet.model.packing import Packed
from nanonet.train import losses


@dataclass
class StepInputs:
    labeled: Packed
    labels: torch.Tensor  # (B_l,) int64
    students_active: bool = False  # False while only the teacher trains (its warm-up)
    unlabeled: Packed | None = None  # None when no term uses unlabeled text (supervised-only)
    views: list[tuple[Packed, float]] = field(default_factory=list)  # per student: its view of `unlabeled`, its embedding noise
    mutual_weight: float = 0.0  # ramped
    teacher_view: Packed | None = None  # a perturbed view of `unlabeled` for the teacher's own unlabeled losses
    graph_probs: torch.Tensor | None = None  # (B_u, C) propagated label distributions of `unlabeled`
    graph_weights: torch.Tensor | None = None  # (B_u,) their certainty
    teacher_logits: torch.Tensor | None = None  # (B_u, C) cached targets of `unlabeled` (offline distillation: the teacher is done)
    teacher_embeddings: torch.Tensor | None = None  # (B_u, H) its cached pooled embeddings of them (with --embedding-weight)


class Cohort(nn.Module):
    """Teacher + students (+ optional projections for hidden-state distillation).

    `forward` returns a dict of loss terms whose 'total' is what the optimizer minimises;
    one module so that DDP can wrap the whole cohort."""

    def __init__(
        self,
        teacher: NanoClassifier,
        students: list[NanoClassifier],
        temperature: float,
        kd_weight: float,
        hidden_weight: float,
        mutual_loss: str,
        self_train_weight: float = 0.0,
        confidence: float = 0.9,
        graph_weight: float = 0.0,
        student_graph_weight: float = 0.0,
        embedding_weight: float = 0.0,
    ):
        super().__init__()
        self.teacher = teacher
        self.students = nn.ModuleList(students)
        hidden = teacher.config.hidden_size
        self.projections = nn.ModuleList(nn.Linear(s.config.hidden_size, hidden) for s in students) if hidden_weight > 0 else None
        self.temperature, self.kd_weight, self.hidden_weight, self.mutual_loss = temperature, kd_weight, hidden_weight, mutual_loss
        self.self_train_weight, self.confidence, self.graph_weight = self_train_weight, confidence, graph_weight
        self.student_graph_weight, self.embedding_weight = student_graph_weight, embedding_weight

    def forward(self, x: StepInputs) -> dict[str, torch.Tensor]:
        if x.teacher_logits is not None:  # offline: the teacher has finished training; its targets are cached
            terms: dict[str, torch.Tensor] = {}
            total = torch.zeros((), device=x.labels.device)
            view_logits = None
        else:
            terms, total, view_logits = self._teacher_terms(x)
        if not x.students_active:
            return {**terms, "total": total}
        ce = sum(losses.supervised(student(x.labeled), x.labels) for student in self.students)
        terms["student_ce"] = ce
        total = total + ce
        if x.unlabeled is None:
            return {**terms, "total": total}

        # 2. its soft targets on unlabeled text (deterministic: eval mode, no grad), live or cached
        t_embedding = None
        if x.teacher_logits is not None:
            t_logits, t_embedding = x.teacher_logits, x.teacher_embeddings
        else:
            with torch.no_grad():
                was_training = self.teacher.training
                self.teacher.eval()
                t_logits, t_embedding = self.teacher(x.unlabeled, return_embedding=True)
                self.teacher.train(was_training)

        # the teacher also learns from its own confident predictions, on a perturbed view
        if view_logits is not None:
            terms["self_train"] = losses.self_training(view_logits, t_logits, self.confidence)
            total = total + self.self_train_weight * terms["self_train"]

        # 3. every student: labels, the teacher, and its peers, each on its own view
        outputs = []
        for student, (view, noise) in zip(self.students, x.views):
            outputs.append(student(view, noise_std=noise, return_embedding=True))
        kd = hid = mut = lp = emb = total.new_zeros(())
        student_graph = x.graph_probs is not None and self.student_graph_weight > 0
        for i in range(len(self.students)):
            logits, embedding = outputs[i]
            kd = kd + losses.distillation(logits, t_logits, self.temperature)
            if student_graph:
                lp = lp + losses.propagated(logits, x.graph_probs, x.graph_weights)
            if self.embedding_weight > 0 and t_embedding is not None:
                emb = emb + losses.embedding_distillation(embedding, t_embedding)
            if self.projections is not None and t_embedding is not None:
                hid = hid + losses.hidden_distillation(embedding, t_embedding, self.projections[i])
            peers = [o[0] for j, o in enumerate(outputs) if j != i]
            mut = mut + losses.mutual(logits, peers, self.mutual_loss)
        terms.update(kd=kd, hidden=hid, mutual=mut, student_graph=lp, embedding=emb)
        total = total + self.kd_weight * kd + self.hidden_weight * hid + x.mutual_weight * mut + self.student_graph_weight * lp
        total = total + self.embedding_weight * emb
        return {**terms, "total": total}

    def _teacher_terms(self, x: StepInputs) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """1. the teacher learns online from the labels, and from the labels propagated over
        the unlabeled pool (from the first step on). Returns its terms, their sum, and its
        logits on its perturbed view when self-training will use them."""
        terms = {"teacher_ce": losses.supervised(self.teacher(x.labeled), x.labels)}
        total = terms["teacher_ce"]
        view_logits = None
        self_train = self.self_train_weight > 0 and x.students_active
        graph = x.graph_probs is not None and self.graph_weight > 0
        if x.teacher_view is not None and (self_train or graph):
            view_logits = self.teacher(x.teacher_view)
        if graph:
            terms["graph"] = losses.propagated(view_logits, x.graph_probs, x.graph_weights)
            total = total + self.graph_weight * terms["graph"]
        return terms, total, view_logits if self_train else None
