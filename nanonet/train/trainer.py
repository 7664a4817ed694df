"""`train(args)`: the NanoNet method, top to bottom.

1. data: N labels per class, the rest unlabeled; tokenize once; token-budget batches
2. cohort: teacher + head; K students from layer selections of the teacher, new heads;
   labels propagated over the unlabeled pool (rerun at --graph-refreshes points)
3. trainable parameters: bias terms + heads (or bias+norm, or all)
4. steps: teacher CE + propagated labels; then per student CE + distillation + propagated
   labels + mutual learning on its view
5. every M steps: dev evaluation, each member keeps its latest state within the dev set's
   noise of its best, resume state saved
6. end: best states restored, test evaluation, best student -> RUN/student, report.json
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nanonet import __version__
from nanonet.data.splits import Splits, label_scarce, load_tables
from nanonet.data.tables import read_table
from nanonet.data.tokens import BatchStream, Tokenized, budget_batches, padding_share, tokenize
from nanonet.errors import NanonetError
from nanonet.fsutil import atomic_write_text
from nanonet.model.checkpoint import make_student, save_checkpoint
from nanonet.model.encoder import NanoClassifier
from nanonet.model.hf import load_pretrained
from nanonet.train import distributed as dist
from nanonet.train.args import TrainArgs
from nanonet.train.cohort import Cohort, StepInputs
from nanonet.train.losses import ramp
from nanonet.train.metrics import accuracy, macro_f1
from nanonet.train.peft import set_trainable
from nanonet.train.propagation import GraphTargets, propagate
from nanonet.train.state import load_state, save_state, trainable_state
from nanonet.train.views import cutoff, packed_rows

LAB_SALT, UNL_SALT = 1, 2


@dataclass
class Member:
    """A teacher or student with the state it keeps (see _evaluate_members) and that state's dev result."""

    name: str
    model: NanoClassifier
    layers: list[int]
    view: str | None
    trainable: int = 0
    total: int = 0
    best: dict = field(default_factory=lambda: {"accuracy": -1.0, "macro_f1": -1.0, "step": 0, "peak": -1.0})
    best_state: dict[str, torch.Tensor] | None = None


def default_student_layers(num_layers: int, k: int) -> list[list[int]]:
    """K selections of every other layer, in order: 6 layers -> [0,2,4], [1,3,5], [0,2,4], ...

    Students beyond the first two repeat a selection; their data views still differ."""
    if num_layers == 1:
        return [[0] for _ in range(k)]
    return [list(range(i % 2, num_layers, 2)) for i in range(k)]


def evaluate(model: NanoClassifier, tokens: Tokenized, gold: list[int], num_classes: int, max_tokens: int,
             device: torch.device) -> dict:  # fmt: skip
    """Accuracy and macro-F1 of `model` on tokenized texts (eval mode, no grad)."""
    if not len(gold):
        return {"accuracy": None, "macro_f1": None, "n": 0}
    pred = predict(model, tokens, max_tokens, device)
    y = np.asarray(gold)
    return {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, num_classes), "n": len(y)}


def predict(model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device) -> np.ndarray:
    """(N,) predicted class of each tokenized text, in row order."""
    pred = np.empty(len(tokens), dtype=np.int64)
    for rows, batch in _eval_batches(model, tokens, max_tokens, device):
        pred[rows] = model(batch).argmax(-1).cpu().numpy()
    return pred


def embed(model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device) -> torch.Tensor:
    """(N, H) pooled embeddings of tokenized texts, in row order."""
    out = torch.empty(len(tokens), model.config.hidden_size)
    for rows, batch in _eval_batches(model, tokens, max_tokens, device):
        out[torch.as_tensor(rows)] = model.embed(batch).float().cpu()
    return out


def _eval_batches(model: NanoClassifier, tokens: Tokenized, max_tokens: int, device: torch.device):
    """(rows, packed batch on `device`) in length order, with `model` in eval mode, no grad and
    autocast on CUDA; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(device):
            for rows in budget_batches(tokens.lengths, max_tokens, rng=None):
                yield rows, packed_rows(tokens, rows).to(device)
    finally:
        model.train(was_training)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _digest(texts: list[str], labels: list[int] | None = None) -> str:
    h = hashlib.sha256()
    for i, t in enumerate(texts):
        h.update(t.encode())
        h.update(b"\0" if labels is None else f"\0{labels[i]}\0".encode())
    return h.hexdigest()


def train(args: TrainArgs, progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict:
    """Run NanoNet training; returns the report (also written to OUT/report.json)."""
    args.validate()
    ctx = dist.setup()
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    # 1. data
    tables = load_tables(args.data, args.text_col, args.label_col)
    extra = [t for f in args.unlabeled for t in read_table(f, args.text_col, None).texts]
    splits: Splits = label_scarce(tables, args.labels_per_class, args.seed, extra, args.dev_per_class)
    teacher_src = load_pretrained(args.teacher)
    max_length = args.max_length or teacher_src.encoder.config.max_length
    tok = lambda texts: tokenize(texts, teacher_src.tokenizer_file, max_length)  # noqa: E731
    lab, unl, dev, test = tok(splits.labeled_texts), tok(splits.unlabeled_texts), tok(splits.dev_texts), tok(splits.test_texts)
    uses_unlabeled = any(w > 0 for w in (args.kd_weight, args.mutual_weight, args.hidden_weight, args.self_train_weight, args.graph_weight,
                                         args.student_graph_weight))
    if uses_unlabeled and len(unl) == 0:
        raise NanonetError(f"{args.data}: no unlabeled text left after drawing {args.labels_per_class} per class; add --unlabeled FILE")
    lab_y = torch.tensor(splits.labeled_ids)
    lab_stream = BatchStream(lab.lengths, args.labeled_tokens, args.seed, LAB_SALT)
    unl_stream = BatchStream(unl.lengths, args.unlabeled_tokens, args.seed, UNL_SALT)
    # supervised-only runs (no distillation, no mutual learning) never touch unlabeled text
    epoch_stream = unl_stream if uses_unlabeled else lab_stream
    steps = args.steps or max(1, math.ceil(args.epochs * epoch_stream.batches_per_epoch() / ctx.world_size))
    num_classes = len(splits.labels)
    warmup = min(args.teacher_warmup_steps, steps // 2)  # the students get at least half the steps

    # 2. cohort
    encoder = teacher_src.encoder
    backend = _backend(args.attention, ctx.device, encoder.config.head_size)
    encoder.attention = args.attention
    teacher = NanoClassifier(encoder, num_classes, teacher_src.pooling)
    layer_sets = args.student_layers or default_student_layers(encoder.config.num_layers, args.students)
    members = [Member("teacher", teacher, list(range(encoder.config.num_layers)), None)]
    for i, layers in enumerate(layer_sets):
        student = NanoClassifier(make_student(encoder, layers), num_classes, teacher_src.pooling)
        members.append(Member(f"student {i}", student, layers, args.views[i % len(args.views)]))

    # labels propagated over the unlabeled pool through a kNN graph of the pretrained
    # teacher's embeddings (computed before any training, so a resumed run gets the same);
    # rebuilt from the training teacher's embeddings at `refresh_at` (see refresh_steps)
    graph, graph_summary, graph_seconds, refreshes, refresh_at = None, None, 0.0, [], set()
    if max(args.graph_weight, args.student_graph_weight) > 0 and len(unl):
        tic = time.perf_counter()
        graph = _propagate(teacher, lab, lab_y, unl, num_classes, args, ctx.device)
        graph_seconds, graph_summary = time.perf_counter() - tic, graph.summary()
        refresh_at = set(refresh_steps(steps, args.graph_refreshes))

    # 3. trainable parameters
    for m in members:
        m.trainable, m.total = set_trainable(m.model, args.teacher_trainable if m.name == "teacher" else args.trainable)
    cohort = Cohort(teacher, [m.model for m in members[1:]], args.temperature, args.kd_weight, args.hidden_weight,
                    args.mutual_loss, args.self_train_weight, args.confidence, args.graph_weight,
                    args.student_graph_weight)  # fmt: skip
    cohort.to(ctx.device).train()
    model = dist.wrap(cohort, ctx)
    optimizer, scheduler = _optimizer(cohort, args, steps)

    start, history, tokens_seen, seconds = 0, [], 0, graph_seconds  # the graph is part of the run's time
    if args.resume:
        start, history, tokens_seen, seconds, saved_graph = load_state(out / "state", args, cohort, optimizer, scheduler, members,
                                                                       ctx.world_size)  # fmt: skip
        refreshes = saved_graph["refreshes"]
        if "probs" in saved_graph:
            graph = GraphTargets(saved_graph["probs"], saved_graph["weights"])
    elif (out / "state").exists():  # checked on every rank, so no rank waits for one that stopped
        raise NanonetError(f"{out}: holds a previous run's state; pass --resume to continue it, or choose another --out")

    # 4./5. steps
    bar = _progress(progress and ctx.rank == 0, steps, start)
    tic = time.perf_counter()
    last_loss = float("nan")
    try:
        for step in range(start, steps):
            if graph is not None and step in refresh_at:
                graph, record = _refresh(graph, teacher, lab, lab_y, unl, num_classes, args, ctx.device, step)
                refreshes.append(record)
            k = step * ctx.world_size + ctx.rank
            lab_rows = lab_stream[k]
            labeled = packed_rows(lab, lab_rows).to(ctx.device)
            active = step >= warmup
            inputs = StepInputs(labeled, lab_y[lab_rows].to(ctx.device), active)
            if uses_unlabeled and (active or graph is not None):  # the graph term trains the teacher during its warm-up too
                unl_rows = unl_stream[k]
                unlabeled = packed_rows(unl, unl_rows)
                g = torch.Generator().manual_seed(args.seed * 1_000_003 + k)
                views = []
                for m in members[1:] if active else []:
                    view = cutoff(unlabeled, args.cutoff_rate, g) if m.view == "cutoff" else unlabeled
                    views.append((view.to(ctx.device), args.noise_std if m.view == "noise" else 0.0))
                weight = args.mutual_weight * ramp(step - warmup, max(1, steps - warmup), args.mutual_rampup) if active else 0.0
                needs_view = args.self_train_weight > 0 or graph is not None
                teacher_view = cutoff(unlabeled, args.cutoff_rate, g).to(ctx.device) if needs_view else None
                rows_t = torch.as_tensor(unl_rows, dtype=torch.long)
                inputs = StepInputs(labeled, inputs.labels, active, unlabeled.to(ctx.device), views, weight, teacher_view,
                                    graph.probs[rows_t].to(ctx.device) if graph is not None else None,
                                    graph.weights[rows_t].to(ctx.device) if graph is not None else None)  # fmt: skip
                tokens_seen += unlabeled.num_tokens * ctx.world_size
            with _autocast(ctx.device):
                terms = model(inputs)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            scheduler.step()
            tokens_seen += labeled.num_tokens * ctx.world_size
            last_loss = float(terms["total"].detach())
            done = step + 1
            if done % args.eval_every == 0 or done == steps:
                record = {"step": done, "loss": round(last_loss, 5), **{k: round(float(v.detach()), 5) for k, v in terms.items() if k != "total"}}
                record["dev"] = _evaluate_members(members, dev, splits.dev_ids, num_classes, args.eval_tokens, ctx, done)
                history.append(record)
                seconds_now = seconds + time.perf_counter() - tic
                if ctx.rank == 0:
                    save_state(out / "state", args, cohort, optimizer, scheduler, members, done, history, tokens_seen, seconds_now,
                               ctx.world_size, graph, refreshes)  # fmt: skip
                dist.barrier(ctx)
            if bar:
                elapsed = seconds + time.perf_counter() - tic
                dev_acc = max((h["dev"][m.name]["accuracy"] for h in history[-1:] for m in members[1:]), default=None)
                bar.update(done, last_loss, dev_acc, tokens_seen / max(elapsed, 1e-9))
            if on_step:
                on_step(done)
    finally:
        if bar:
            bar.close()
    seconds += time.perf_counter() - tic

    # 6. restore best states, test, choose, save
    for m in members:
        if m.best_state is not None:
            m.model.load_state_dict(m.best_state, strict=False)
    results = []
    for m in members:
        results.append({
            "name": m.name, "layers": m.layers, "view": m.view,
            "dev": {k: m.best[k] for k in ("accuracy", "macro_f1")}, "best_step": m.best["step"], "dev_peak": m.best["peak"],
            "test": evaluate(m.model, test, splits.test_ids, num_classes, args.eval_tokens, ctx.device),
            "trainable_parameters": m.trainable, "parameters": m.total,
        })  # fmt: skip
    selection = None
    if ctx.rank == 0:
        # a run that trains on labels only never reads unlabeled text, not even to break a tie
        selection = choose_student(members, len(dev), unl if uses_unlabeled else None, args.seed, args.eval_tokens, ctx.device)
    selection = dist.broadcast_object(selection, ctx)
    chosen = selection["chosen"] + 1
    unl_batches = [unl_stream[k] for k in range(min(unl_stream.batches_per_epoch(), steps * ctx.world_size))]
    report = {
        "nanonet_version": __version__,
        "settings": args.to_dict(),
        "data": {**splits.summary(), "labels": splits.labels, "labeled_sha256": _digest(splits.labeled_texts, splits.labeled_ids),
                 "train_sha256": _digest(tables["train"].texts),
                 "propagation": {**graph_summary, "seconds": round(graph_seconds, 1), "refreshes": refreshes} if graph is not None else None},  # fmt: skip
        "teacher": results[0],
        "students": results[1:],
        "chosen_student": chosen - 1,
        "selection": selection,
        "training": {
            "steps": steps, "seconds": round(seconds, 1), "tokens": tokens_seen,
            "tokens_per_second": round(tokens_seen / max(seconds, 1e-9), 1),
            "padding_avoided": round(padding_share(unl.lengths, unl_batches), 4),
            "device": ctx.device.type, "world_size": ctx.world_size,
            "attention_backend": backend,
        },  # fmt: skip
        "ranks": dist.gather_weight_digests(cohort, ctx),
        "history": history,
    }
    if ctx.rank == 0:
        provenance = {"provenance": {"teacher": args.teacher, "labeled_sha256": report["data"]["labeled_sha256"],
                                     "dev": members[chosen].best, "layers": members[chosen].layers}}  # fmt: skip
        save_checkpoint(out / "student", members[chosen].model, splits.labels, teacher_src.path, provenance)
        save_checkpoint(out / "teacher", teacher, splits.labels, teacher_src.path, {"provenance": {"teacher": args.teacher}})
        atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    dist.barrier(ctx)
    dist.teardown(ctx)
    return report


def refresh_steps(steps: int, refreshes: int) -> list[int]:
    """The steps before which label propagation reruns: `refreshes` points evenly spaced
    inside the run (1 refresh in 146 steps: before step 73, after the first of 2 epochs)."""
    return sorted({round(steps * i / (refreshes + 1)) for i in range(1, refreshes + 1)} - {0})


def _propagate(teacher: NanoClassifier, lab: Tokenized, lab_y: torch.Tensor, unl: Tokenized, num_classes: int, args: TrainArgs,
               device: torch.device) -> GraphTargets:  # fmt: skip
    """Label propagation over the teacher's current embeddings of the labeled and unlabeled texts."""
    teacher.to(device)
    return propagate(embed(teacher, lab, args.eval_tokens, device), lab_y, embed(teacher, unl, args.eval_tokens, device), num_classes,
                     k=args.graph_k)  # fmt: skip


def _refresh(graph: GraphTargets, teacher: NanoClassifier, lab: Tokenized, lab_y: torch.Tensor, unl: Tokenized, num_classes: int,
             args: TrainArgs, device: torch.device, step: int) -> tuple[GraphTargets, dict]:  # fmt: skip
    """Rerun label propagation on the training teacher's embeddings, which by now separate
    the classes better than the pretrained ones (the teacher has learned from the labels and
    from the first graph). Returns the new targets and a record for the report."""
    tic = time.perf_counter()
    new = _propagate(teacher, lab, lab_y, unl, num_classes, args, device)
    changed = float((new.probs.argmax(-1) != graph.probs.argmax(-1)).float().mean()) if len(new.weights) else 0.0
    return new, {"step": step, **new.summary(), "changed": round(changed, 4), "seconds": round(time.perf_counter() - tic, 1)}


def dev_tolerance(accuracy: float, n: int) -> float:
    """The smallest dev-accuracy difference `n` dev examples resolve: one standard error of
    `accuracy`, and at least one example."""
    n = max(1, n)
    return max(1.0 / n, math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)) + 1e-9


def choose_student(members: list[Member], dev_size: int, unl: Tokenized | None, seed: int, max_tokens: int, device: torch.device,
                   sample: int = 1000) -> dict:  # fmt: skip
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
    return {"chosen": chosen, "dev_tolerance": round(tolerance, 4), "tied_on_dev": tied,
            "teacher_agreement": {str(k): round(v, 4) for k, v in agreement.items()} if agreement else None}


def _backend(name: str, device: torch.device, head_size: int) -> str:
    """The attention backend training will use (bf16 on CUDA, fp32 on CPU); a bad --attention is a one-line error."""
    from nanonet.model.attention import pick_backend

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return pick_backend(device, dtype, head_size, name).name
    except ValueError as e:
        raise NanonetError(f"--attention: {e}") from None


def _evaluate_members(members: list[Member], dev: Tokenized, gold: list[int], num_classes: int, max_tokens: int,
                      ctx: dist.Context, step: int) -> dict:  # fmt: skip
    """Dev metrics of every member; a member keeps a copy of its state when the dev accuracy
    is within the dev set's noise of its best so far (the latest such state wins).

    Rank 0 evaluates and every rank takes its figures, so replicas keep the same best states."""
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


def _optimizer(cohort: Cohort, args: TrainArgs, steps: int):
    heads, teacher, students = [], [], []
    for name, p in cohort.named_parameters():
        if p.requires_grad:
            if ".head." in f".{name}" or name.startswith("projections."):
                heads.append(p)
            else:
                (teacher if name.startswith("teacher.") else students).append(p)
    groups = [
        {"params": teacher, "lr": _default_lr(args.teacher_lr, args.teacher_trainable)},
        {"params": students, "lr": _default_lr(args.lr, args.trainable)},
        {"params": heads, "lr": args.head_lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=args.weight_decay)
    warm = max(1, int(args.warmup * steps))

    def schedule(s: int) -> float:  # linear warm-up, then linear decay to 0
        if s < warm:
            return (s + 1) / warm
        return max(0.0, (steps - s) / max(1, steps - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _default_lr(lr: float | None, trainable: str) -> float:
    return lr if lr is not None else (5e-5 if trainable == "all" else 3e-3)


class _Bar:
    """A rich progress bar with loss, dev accuracy and tokens/s."""

    def __init__(self, total: int, start: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=start, stats="")

    def update(self, step: int, loss: float, dev_acc: float | None, tokens_per_s: float) -> None:
        dev = f"dev {dev_acc:.3f}" if dev_acc is not None else "dev -"
        self.progress.update(self.task, completed=step, stats=f"loss {loss:.3f}  {dev}  {tokens_per_s:,.0f} tok/s")

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int, start: int) -> _Bar | None:
    return _Bar(total, start) if enabled and not os.environ.get("NANONET_NO_PROGRESS") else None
