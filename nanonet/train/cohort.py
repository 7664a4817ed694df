"""The cohort: a teacher and K students, and the losses of one NanoNet step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from nanonet.model.encoder import NanoClassifier
from nanonet.model.packing import Packed
from nanonet.train import losses


@dataclass
class StepInputs:
    labeled: Packed
    labels: torch.Tensor  # (B_l,) int64
    unlabeled: Packed | None  # None while only the teacher trains
    views: list[tuple[Packed, float]]  # per student: its view of `unlabeled` and its embedding noise
    mutual_weight: float  # ramped


class Cohort(nn.Module):
    """Teacher + students (+ optional projections for hidden-state distillation).

    `forward` returns a dict of loss terms whose 'total' is what the optimizer minimises;
    one module so that DDP can wrap the whole cohort."""

    def __init__(self, teacher: NanoClassifier, students: list[NanoClassifier], temperature: float,
                 kd_weight: float, hidden_weight: float, mutual_loss: str):  # fmt: skip
        super().__init__()
        self.teacher = teacher
        self.students = nn.ModuleList(students)
        hidden = teacher.config.hidden_size
        self.projections = nn.ModuleList(
            nn.Linear(s.config.hidden_size, hidden) for s in students
        ) if hidden_weight > 0 else None  # fmt: skip
        self.temperature, self.kd_weight, self.hidden_weight, self.mutual_loss = temperature, kd_weight, hidden_weight, mutual_loss

    def forward(self, x: StepInputs) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        # 1. the teacher learns online from the labels
        terms["teacher_ce"] = losses.supervised(self.teacher(x.labeled), x.labels)
        total = terms["teacher_ce"]
        if x.unlabeled is None:
            return {**terms, "total": total}

        # 2. its soft targets on unlabeled text (deterministic: eval mode, no grad)
        with torch.no_grad():
            was_training = self.teacher.training
            self.teacher.eval()
            t_logits, t_embedding = self.teacher(x.unlabeled, return_embedding=True)
            self.teacher.train(was_training)

        # 3. every student: labels, the teacher, and its peers, each on its own view
        outputs = []
        for student, (view, noise) in zip(self.students, x.views):
            outputs.append(student(view, noise_std=noise, return_embedding=True))
        ce = kd = hid = mut = total.new_zeros(())
        for i, student in enumerate(self.students):
            logits, embedding = outputs[i]
            ce = ce + losses.supervised(student(x.labeled), x.labels)
            kd = kd + losses.distillation(logits, t_logits, self.temperature)
            if self.projections is not None:
                hid = hid + losses.hidden_distillation(embedding, t_embedding, self.projections[i])
            peers = [o[0] for j, o in enumerate(outputs) if j != i]
            mut = mut + losses.mutual(logits, peers, self.mutual_loss)
        terms.update(student_ce=ce, kd=kd, hidden=hid, mutual=mut)
        total = total + ce + self.kd_weight * kd + self.hidden_weight * hid + x.mutual_weight * mut
        return {**terms, "total": total}
