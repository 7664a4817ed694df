"""Which state each member keeps, and which student ships.

With tens of dev examples one example is several points of accuracy, so these choices
treat differences smaller than the dev set can resolve as ties, or (check_start) use no
labels at all."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from nanonet.data.tokens import Tokenized
from nanonet.model.encoder import NanoClassifier
from nanonet.train import distributed as dist
from nanonet.train.evaluate import evaluate, predict
from nanonet.train.state import trainable_state


@dataclass
class Member:
    """A teacher or student with the state it keeps (see `evaluate_members`) and that state's dev result."""

    name: str
    model: NanoClassifier
    layers: list[int]
    view: str | None
    trainable: int = 0
    total: int = 0
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "macro_f1": -1.0, "step": 0, "peak": -1.0})
    best_state: dict[str, torch.Tensor] | None = None


def dev_tolerance(accuracy: float, n: int) -> float:
    """The smallest dev-accuracy difference `n` dev examples resolve: one standard error of
    `accuracy`, and at least one example."""
    n = max(1, n)
    return max(1.0 / n, math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)) + 1e-9


def evaluate_members(
    members: list[Member], dev: Tokenized, gold: list[int], num_classes: int, max_tokens: int, ctx: dist.Context, step: int
) -> dict:
    """Dev metrics of every member; a member keeps a copy of its state when the dev accuracy
    is within the dev set's noise of its best so far (the latest such state wins).

    Rank 0 evaluates and every rank takes its figures, so replicas keep the same best states.
    Without a dev set nothing is evaluated and every member keeps its final state."""
    if not len(gold):
        return {}
    scores = None
    if ctx.rank == 0:
        scores = [evaluate(m.model, dev, gold, num_classes, max_tokens, ctx.device) for m in members]
    scores = dist.broadcast_object(scores, ctx)
    results = {}
    for m, r in zip(members, scores):
        results[m.name] = {k: round(r[k], 5) for k in ("accuracy", "macro_f1")}
        # keep the latest state within the dev set's noise of the best seen: with tens of
        # dev examples an earlier peak is as often luck as progress, and training goes on
        peak = max(m.best["peak"], r["accuracy"])
        if r["accuracy"] >= peak - dev_tolerance(peak, len(gold)):
            m.best = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "step": step, "peak": peak}
            m.best_state = trainable_state(m.model)
        else:
            m.best = {**m.best, "peak": peak}
    return results


def choose_student(
    members: list[Member], dev_size: int, unl: Tokenized | None, seed: int, max_tokens: int, device: torch.device, sample: int = 1000
) -> dict:
    """The student to ship: the best dev accuracy, where a lead smaller than the dev set can
    resolve is a tie.

    With tens of dev examples, one example is several points of accuracy, and the dev set
    often picks the weaker student. Students within one standard error of the best dev
    accuracy (and at least one example) are tied; among them the one agreeing most with the
    teacher, the strongest member, on up to `sample` unlabeled texts wins (no labels used)."""
    students = members[1:]
    best = max(m.best["accuracy"] for m in students)
    tolerance = dev_tolerance(best, dev_size)
    tied = [i for i, m in enumerate(students) if m.best["accuracy"] >= best - tolerance]
    agreement = None
    if len(tied) > 1 and unl is not None and len(unl):
        part = unl.select(np.sort(np.random.default_rng([seed, 7]).permutation(len(unl))[:sample]))
        teacher = predict(members[0].model, part, max_tokens, device)
        agreement = {i: float((predict(students[i].model, part, max_tokens, device) == teacher).mean()) for i in tied}
        chosen = max(tied, key=lambda i: (agreement[i], students[i].best["accuracy"], students[i].best["macro_f1"], -i))
    else:
        chosen = max(range(len(students)), key=lambda i: (students[i].best["accuracy"], students[i].best["macro_f1"], -i))
    return {
        "chosen": chosen,
        "dev_tolerance": round(tolerance, 4),
        "tied_on_dev": tied,
        "teacher_agreement": {str(k): round(v, 4) for k, v in agreement.items()} if agreement else None,
    }


def check_start(
    students: list[Member],
    starts: list[dict[str, torch.Tensor]],
    check: Tokenized,
    teacher_pred: np.ndarray,
    dev: Tokenized,
    gold: list[int],
    num_classes: int,
    max_tokens: int,
    ctx: dist.Context,
) -> list[dict]:
    """Each student keeps whichever of its two states agrees more with the teacher's
    predictions `teacher_pred` on the `check` texts: as it started (`starts`: its head
    fitted, no step taken) or as trained (the state its dev checks kept). No head was
    fitted on the check texts and no step drew them, so neither state has seen them; a
    tie keeps the trained state. A student that goes back to its start gets that state's
    dev figures. Returns one record per student for the report.

    On a set of few classes a head fitted on thousands of propagated labels can be as good
    as the student gets, and the steps may cost it a little; on many classes the steps add
    points. With 40 dev labels the run cannot tell which; on the tuning splits agreement
    with the teacher could not either (the two states within a few texts of each other, and
    a trained student that passes its teacher agrees with it less), so --check-texts is
    off by default (docs/tuning.md)."""
    records = None
    if ctx.rank == 0:
        records = []
        for m, start in zip(students, starts):
            final = trainable_state(m.model)
            agreement = {}
            for name, state in (("start", start), ("trained", m.best_state if m.best_state is not None else final)):
                m.model.load_state_dict(state, strict=False)
                agreement[name] = float((predict(m.model, check, max_tokens, ctx.device) == teacher_pred).mean())
            m.model.load_state_dict(final, strict=False)
            kept = "start" if agreement["start"] > agreement["trained"] else "trained"
            records.append(
                {
                    "name": m.name,
                    "agreement_start": round(agreement["start"], 4),
                    "agreement_trained": round(agreement["trained"], 4),
                    "kept": kept,
                }
            )
    records = dist.broadcast_object(records, ctx)
    for m, start, record in zip(students, starts, records):
        if record["kept"] == "start":
            m.model.load_state_dict(start, strict=False)
            scores = None
            if len(gold) and ctx.rank == 0:
                scores = evaluate(m.model, dev, gold, num_classes, max_tokens, ctx.device)
            scores = dist.broadcast_object(scores, ctx)
            if scores is not None:
                m.best = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "step": 0, "peak": m.best["peak"]}
            m.best_state = start
    return records
