"""`train(args)`: the NanoNet method, top to bottom.

1. data: N labels per class, the rest unlabeled; tokenize once; token-budget batches
2. cohort: teacher + head; K students from layer selections of the teacher, new heads;
   then the teacher alone adapts to the labels (supervised contrastive, head refitted)
3. label propagation: the few labels spread over the unlabeled pool through a kNN graph
   of the teacher's embeddings (rerun at --graph-refreshes points)
4. trainable parameters (bias terms + heads, or bias+norm, or all) and the optimizer
5. steps: teacher CE + propagated labels; then per student CE + distillation + propagated
   labels + mutual learning on its view; every M steps a dev evaluation (each member
   keeps its latest state within the dev set's noise of its best) and the resume state
6. selection: best states restored, test evaluation, the student to ship
7. save: RUN/student, RUN/teacher, RUN/report.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from nanonet import __version__
from nanonet.data.splits import Splits, cap_unlabeled, hand_labeled, label_scarce, load_tables
from nanonet.data.tables import join_tables, read_table
from nanonet.data.tokens import BatchStream, Tokenized, padding_share, tokenize
from nanonet.model.checkpoint import make_student, save_checkpoint
from nanonet.model.encoder import NanoClassifier
from nanonet.model.hf import Pretrained, load_pretrained
from nanonet.rundir import check_out_dir, clear_stale_state
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import atomic_write_text
from nanonet.train import distributed as dist
from nanonet.train.args import TrainArgs
from nanonet.train.cohort import Cohort, StepInputs
from nanonet.train.contrastive import adapt_teacher
from nanonet.train.evaluate import autocast, embed, embed_and_logits, embed_with_branches, eval_tokens_for, evaluate, predict
from nanonet.train.heads import fit_head, fit_member_head
from nanonet.train.losses import ramp
from nanonet.train.optim import build_optimizer
from nanonet.train.peft import set_trainable
from nanonet.train.profile import Phases, peak_rss_mb, reset_peak_rss, rss_mb
from nanonet.train.progress import Advance, phase_bar, progress_bar, warn
from nanonet.train.propagation import GraphTargets, changed_share, most_certain_per_class, propagate_from, refresh_steps
from nanonet.train.selection import Member, check_start, choose_student, evaluate_members
from nanonet.train.state import load_state, save_state, trainable_state
from nanonet.train.views import cutoff, packed_rows

LAB_SALT, UNL_SALT, CHECK_SALT = 1, 2, 3  # the labeled and unlabeled batch streams and the check texts draw from different seeds


def train(args: TrainArgs, progress: bool = True, on_step: Callable[[int], None] | None = None) -> dict:
    """Run NanoNet training; returns the report (also written to OUT/report.json)."""
    args.validate()
    check_out_dir(args.out, args.resume, args.overwrite)
    ctx = dist.setup()
    if args.overwrite and not args.resume and ctx.rank == 0:
        clear_stale_state(args.out)
    if args.eval_tokens is None:  # resolved here, so the report and the resume state hold the value used
        args = dataclasses.replace(args, eval_tokens=eval_tokens_for(ctx.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    reset_peak_rss()
    phases = Phases()
    with phases("data"):
        splits, train_texts = draw_splits(args)
        if ctx.rank == 0:
            for message in splits.warnings:
                warn(message)
        teacher_src = load_pretrained(args.teacher)
        cap_length(teacher_src, args.max_length)
        data = tokenize_splits(args, splits, teacher_src)
    steps = count_steps(args, data, ctx)
    members, backend = build_cohort(args, teacher_src, data.num_classes, ctx)
    show = progress and ctx.rank == 0  # the bars, on an interactive run's first rank
    with phases("contrastive"):
        adaptation = adapt(members[0].model, data, args, ctx, show)
        if adaptation is not None and args.students_from == "adapted":
            members = rebuild_students(members, teacher_src, data.num_classes)
    with phases("heads"):
        fit_heads(members, data, args, ctx, teacher_fitted=adaptation is not None)
    with phases("propagation"):
        graph = propagate_labels(members, data, args, ctx, steps, show)
    with phases("heads"):
        fit_pseudo_heads(members, data, graph, args, ctx, show)
    cohort, optimizer, scheduler = make_trainable(members, args, steps, ctx)
    starts = [trainable_state(m.model) for m in members[1:]] if len(data.check_rows) else None  # before a resume loads later ones
    run = start_or_resume(Path(args.out), args, cohort, optimizer, scheduler, members, graph, ctx, phases)
    run_steps(run, data, members, cohort, optimizer, scheduler, graph, args, steps, ctx, show, on_step)
    run.start_check = keep_start_or_trained(run, members, starts, data, args, ctx)
    with phases("test"):
        results, selection = select_student(members, data, args, ctx, show)
    report = build_report(args, data, train_texts, graph, run, results, selection, steps, backend, cohort, ctx)
    report["contrastive"] = adaptation
    report["training"]["phases"] = {**phases.rounded(), **run.phases.rounded()}
    report["training"]["peak_rss_mb"] = peak_rss_mb()
    if ctx.rank == 0:
        save_run(Path(args.out), members, selection["chosen"] + 1, data.splits.labels, teacher_src, args, report)
    dist.barrier(ctx)
    dist.teardown(ctx)
    return report


@dataclass
class Data:
    """The run's texts, tokenized once with the teacher's tokenizer, and the batch streams over them."""

    splits: Splits
    lab: Tokenized
    unl: Tokenized
    dev: Tokenized
    test: Tokenized
    lab_y: torch.Tensor  # (L,) class ids of the labeled texts
    teacher_lab: Tokenized  # the labels the teacher learns: `lab`, plus dev's with --teacher-dev-labels
    teacher_lab_y: torch.Tensor
    head_lab: Tokenized  # the labels the students' heads start fitted on: `lab`, plus dev's with --student-head-dev-labels
    head_lab_y: torch.Tensor
    lab_stream: BatchStream
    unl_stream: BatchStream  # over the pool less `check_rows`
    check_rows: np.ndarray  # pool rows held out of the steps and the heads' fits (check_start), ascending
    uses_unlabeled: bool  # False for supervised-only runs, which never touch unlabeled text
    max_length: int  # every text was cut to this many tokens

    @property
    def num_classes(self) -> int:
        return len(self.splits.labels)


class TeacherCache(NamedTuple):
    """Offline distillation: the finished teacher's logits on the unlabeled pool, and (with
    --embedding-weight) its pooled embeddings of it, from one pass."""

    logits: torch.Tensor
    embeddings: torch.Tensor | None = None


@dataclass
class Graph:
    """Label propagation's targets for the unlabeled pool, and what the report says of them."""

    targets: GraphTargets | None = None
    summary: dict | None = None
    seconds: float = 0.0
    refreshes: list[dict] = field(default_factory=list)
    refresh_at: set[int] = field(default_factory=set)
    teacher_cache: TeacherCache | None = None  # from the same pass, when the teacher is already final (offline, no warm-up)
    student_embeddings: list[torch.Tensor] | None = None  # each student's (U, H) embeddings of the pool, from the same pass


@dataclass
class Run:
    """What the steps accumulate, saved with the resume state."""

    start: int = 0
    history: list[dict] = field(default_factory=list)
    tokens_seen: int = 0
    seconds: float = 0.0
    phases: Phases = field(default_factory=Phases)  # "steps", "dev" and "cache" seconds of this process
    teacher_cache: TeacherCache | None = None  # offline distillation: what the finished teacher gives the students
    start_check: dict | None = None  # check_start's records, for the report


def draw_splits(args: TrainArgs) -> tuple[Splits, list[str]]:
    """1. data: N labeled examples per class drawn by seed, the rest of train (plus any
    --unlabeled files) unlabeled (at most --max-unlabeled of it, drawn by seed), dev and
    test; or the rows of a --labeled file, the --unlabeled pool and the --dev and --test
    files. Also returns train's (or the labeled file's) texts, for the report's hash."""
    extra = [t for f in args.unlabeled for t in read_table(f, args.text_col, None).texts]
    if args.labeled:
        dev, test = (read_table(f, args.text_col, args.label_col, need_labels=True) if f else None for f in (args.dev, args.test))
        labeled = join_tables([read_table(f, args.text_col, args.label_col, need_labels=True) for f in args.labeled])
        splits = hand_labeled(labeled, extra, dev, test)
        return cap_unlabeled(splits, args.max_unlabeled, args.seed), labeled.texts
    assert args.data is not None
    tables = load_tables(args.data, args.text_col, args.label_col)
    splits = label_scarce(tables, args.labels_per_class, args.seed, extra, args.dev_per_class)
    return cap_unlabeled(splits, args.max_unlabeled, args.seed), tables["train"].texts


def cap_length(teacher_src: Pretrained, max_length: int) -> None:
    """The teacher's max length becomes --max-length where that is shorter; every member
    copies its config, so the checkpoints, the export and the runtime truncate where
    training did."""
    config = teacher_src.encoder.config
    config.max_length = min(config.max_length, max_length)


def tokenize_splits(args: TrainArgs, splits: Splits, teacher_src: Pretrained) -> Data:
    """1. data: every split tokenized once; labeled and unlabeled batches by token budget."""
    max_length = teacher_src.encoder.config.max_length

    def tok(texts: list[str]) -> Tokenized:
        return tokenize(texts, teacher_src.tokenizer_file, max_length)

    unlabeled_weights = (
        args.kd_weight,
        args.mutual_weight,
        args.hidden_weight,
        args.self_train_weight,
        args.graph_weight,
        args.student_graph_weight,
        args.embedding_weight,
    )
    uses_unlabeled = any(w > 0 for w in unlabeled_weights)
    unl = tok(splits.unlabeled_texts)
    if uses_unlabeled and len(unl) == 0:
        if args.labeled:
            raise NanonetError(f"{', '.join(args.labeled)}: no unlabeled text to learn from; add --unlabeled POOL")
        raise NanonetError(f"{args.data}: no unlabeled text left after drawing {args.labels_per_class} per class; add --unlabeled FILE")
    lab, dev = tok(splits.labeled_texts), tok(splits.dev_texts)
    lab_y = torch.tensor(splits.labeled_ids)
    wants_dev = args.teacher_dev_labels or args.student_dev_labels or args.student_head_dev_labels
    with_dev = labels_with_dev(lab, dev, splits) if wants_dev else (lab, lab_y)
    teacher_lab, teacher_lab_y = with_dev if args.teacher_dev_labels else (lab, lab_y)
    head_lab, head_lab_y = with_dev if args.student_head_dev_labels else (lab, lab_y)
    if args.student_dev_labels:
        head_lab, head_lab_y = with_dev
        lab, lab_y = with_dev
    check = check_rows(len(unl), args) if uses_unlabeled else np.empty(0, dtype=np.int64)
    drawn = np.setdiff1d(np.arange(len(unl)), check)
    return Data(
        splits=splits,
        lab=lab,
        unl=unl,
        dev=dev,
        test=tok(splits.test_texts),
        lab_y=lab_y,
        teacher_lab=teacher_lab,
        teacher_lab_y=teacher_lab_y,
        head_lab=head_lab,
        head_lab_y=head_lab_y,
        lab_stream=BatchStream(lab.lengths, args.labeled_tokens, args.seed, LAB_SALT),
        unl_stream=BatchStream(unl.lengths[drawn], args.unlabeled_tokens, args.seed, UNL_SALT, rows=drawn),
        check_rows=check,
        uses_unlabeled=uses_unlabeled,
        max_length=max_length,
    )


def check_rows(pool: int, args: TrainArgs) -> np.ndarray:
    """--check-texts: the pool rows held out to compare each student's two states, drawn by
    seed, at most a tenth of the pool so that the steps and heads keep nine tenths of it."""
    n = min(args.check_texts, pool // 10)
    return np.sort(np.random.default_rng([args.seed, CHECK_SALT]).permutation(pool)[:n])


def labels_with_dev(lab: Tokenized, dev: Tokenized, splits: Splits) -> tuple[Tokenized, torch.Tensor]:
    """The labeled rows, then the dev rows of classes a labeled row names (another class has no output to learn)."""
    known = [i for i, c in enumerate(splits.dev_ids) if c >= 0]
    return lab.then(dev.select(known)), torch.tensor(splits.labeled_ids + [splits.dev_ids[i] for i in known])


def count_steps(args: TrainArgs, data: Data, ctx: dist.Context) -> int:
    """--steps, or --epochs over the unlabeled pool (over the labels for supervised-only runs),
    at least --min-steps and --min-steps-per-class per class."""
    if args.steps:
        return args.steps
    stream = data.unl_stream if data.uses_unlabeled else data.lab_stream
    floor = max(args.min_steps, args.min_steps_per_class * data.num_classes)
    return max(1, floor, math.ceil(args.epochs * stream.batches_per_epoch() / ctx.world_size))


def default_student_layers(num_layers: int, k: int) -> list[list[int]]:
    """K selections of half the teacher's layers. The first keeps the bottom layers and
    the last one (6 layers -> [0,1,5]): on the tuning splits it beat every other layer
    (0,2,4) by a point on ag_news and was level on hwu64 and yahoo_answers (docs/tuning.md). Students beyond
    it take every other layer, even then odd: [0,2,4], [1,3,5], [0,2,4], ...; their data
    views differ too."""
    if num_layers == 1:
        return [[0] for _ in range(k)]
    half = (num_layers + 1) // 2
    bottom_and_top = [*range(half - 1), num_layers - 1]
    return [bottom_and_top] + [list(range((i - 1) % 2, num_layers, 2)) for i in range(1, k)]


def build_cohort(args: TrainArgs, teacher_src: Pretrained, num_classes: int, ctx: dist.Context) -> tuple[list[Member], str]:
    """2. cohort: the teacher with a new head, then K students made of its layers ("model
    views"), each with its own data view. Returns the members and the attention backend."""
    encoder = teacher_src.encoder
    if args.attention_dropout is not None:
        encoder.set_attention_dropout(args.attention_dropout)  # the students copy it with the config
    backend = _backend(args.attention, ctx.device, encoder.config.head_size, encoder.config.attention_dropout > 0)
    encoder.attention = args.attention
    teacher = NanoClassifier(encoder, num_classes, teacher_src.pooling)
    members = [Member("teacher", teacher, list(range(encoder.config.num_layers)), None)]
    for i, layers in enumerate(args.student_layers or default_student_layers(encoder.config.num_layers, args.students)):
        student = NanoClassifier(make_student(encoder, layers), num_classes, teacher_src.pooling)
        members.append(Member(f"student {i}", student, layers, args.views[i % len(args.views)]))
    return members, backend


ADAPTED = "adapted_teacher.safetensors"  # in the run directory: the teacher after its contrastive phase


def adapt(teacher: NanoClassifier, data: Data, args: TrainArgs, ctx: dist.Context, show: bool = False) -> dict | None:
    """2. the teacher alone adapts to the labels (contrastive.adapt_teacher). Every weight
    changes, and the resume state holds only what the cohort trains, so the adapted teacher
    is saved once in RUN/adapted_teacher.safetensors and a resumed run loads it instead of
    adapting again (which on a GPU, or with other --threads, would not give the same
    weights). Under DDP every rank takes rank 0's adapted teacher."""
    if args.contrastive_steps <= 0:
        return None
    path = Path(args.out) / ADAPTED
    if args.resume and path.is_file():
        return load_adapted(teacher, path)
    souped = args.contrastive_soup > 1
    pretrained = {k: v.detach().clone() for k, v in teacher.encoder.state_dict().items()} if souped else None
    adapted, summaries = [], []
    with phase_bar(show, "adapt teacher", args.contrastive_steps * args.contrastive_soup, "contrastive steps") as advance:
        for ingredient in range(args.contrastive_soup):
            if ingredient:
                teacher.encoder.load_state_dict(pretrained)  # each ingredient starts where the first did
            summary = adapt_teacher(
                teacher,
                data.teacher_lab,
                data.teacher_lab_y,
                data.num_classes,
                args.contrastive_steps,
                args.contrastive_lr,
                args.contrastive_temperature,
                args.contrastive_tokens,
                args.eval_tokens,
                args.seed + ingredient,
                ctx.device,
                advance,
                args.contrastive_stop_gap,
                fit_head=not souped,  # a soup's head is fitted once, on the mean
            )
            summaries.append(summary)
            if souped:
                adapted.append({k: v.detach().clone() for k, v in teacher.encoder.state_dict().items()})
    if souped:
        summary = soup(teacher, adapted, summaries, data, args, ctx)
    dist.broadcast_module(teacher, ctx)
    if ctx.rank == 0:
        save_adapted(teacher, summary, path)
    dist.barrier(ctx)
    return summary


def soup(teacher: NanoClassifier, adapted: list[dict], summaries: list[dict], data: Data, args: TrainArgs, ctx: dist.Context) -> dict:
    """--contrastive-soup: the teacher's encoder becomes the mean of its adapted copies
    (a model soup, Wortsman et al. 2022: copies fine-tuned from the same weights average
    without leaving their basin), and its head is fitted again on the mean's embeddings.
    Returns the first copy's summary with the totals of all."""
    mean = {
        k: torch.stack([a[k].float() for a in adapted]).mean(0).to(v.dtype) if v.is_floating_point() else v for k, v in adapted[0].items()
    }
    teacher.encoder.load_state_dict(mean)
    head_loss = fit_member_head(teacher, data.teacher_lab, data.teacher_lab_y, data.num_classes, args.eval_tokens, ctx.device)
    return {
        **summaries[0],
        "soup": len(adapted),
        "steps_run": sum(s["steps_run"] for s in summaries),
        "loss_last": [s["loss_last"] for s in summaries],
        "head_loss": round(head_loss, 4),
        "seconds": round(sum(s["seconds"] for s in summaries), 1),
    }


def save_adapted(teacher: NanoClassifier, summary: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}, str(tmp), metadata={"summary": json.dumps(summary)}
    )
    tmp.replace(path)


def load_adapted(teacher: NanoClassifier, path: Path) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        summary = json.loads((f.metadata() or {}).get("summary", "{}"))
    try:
        teacher.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        raise NanonetError(f"{path}: not this run's adapted teacher ({str(e).splitlines()[0]})") from None
    return summary


def rebuild_students(members: list[Member], teacher_src: Pretrained, num_classes: int) -> list[Member]:
    """2. --students-from adapted: each student made again, of the adapted teacher's layers."""
    encoder = members[0].model.encoder
    rebuilt = [
        Member(m.name, NanoClassifier(make_student(encoder, m.layers), num_classes, teacher_src.pooling), m.layers, m.view)
        for m in members[1:]
    ]
    return [members[0], *rebuilt]


def fit_heads(members: list[Member], data: Data, args: TrainArgs, ctx: dist.Context, teacher_fitted: bool) -> None:
    """2. every head fitted on its member's embeddings of the labels (heads.py; the teacher's
    on `teacher_lab`, with --teacher-dev-labels the dev labels too); the adapted teacher's
    head was fitted at the end of its contrastive phase."""
    if not args.fit_heads:
        return
    for m in members[1 if teacher_fitted else 0 :]:
        lab, lab_y = (data.teacher_lab, data.teacher_lab_y) if m.name == "teacher" else (data.head_lab, data.head_lab_y)
        fit_member_head(m.model, lab, lab_y, data.num_classes, args.eval_tokens, ctx.device)


def propagate_labels(members: list[Member], data: Data, args: TrainArgs, ctx: dist.Context, steps: int, show: bool = False) -> Graph:
    """3. label propagation over the (adapted) teacher's embeddings, computed before any
    training so that a resumed run gets the same targets; off when no loss uses them. With
    --pseudo-head-share the teacher's head is then refitted on the labels and the most
    certain propagated labels. The same pass over the pool gives the students' embeddings
    of it when their heads are to be fitted on propagated labels (fit_pseudo_heads)."""
    if max(args.graph_weight, args.student_graph_weight) <= 0 or not len(data.unl):
        return Graph()
    teacher = members[0].model
    students = [m.model for m in members[1:]] if fits_pseudo_heads(args, len(members)) else []
    tic = time.perf_counter()
    with phase_bar(show, "label propagation", len(data.unl) + len(data.teacher_lab), "texts") as advance:
        teacher.to(ctx.device)
        unl_embeddings, cached, student_embeddings = embed_with_branches(teacher, students, data.unl, args.eval_tokens, ctx.device, advance)
        if not (distils_offline(args, data) and teacher_only_steps(args, steps) == 0):
            cached = None  # the teacher trains on: its logits now are not the students' targets
        targets, lab_embeddings, unl_embeddings = propagate_teacher_labels(teacher, data, args, ctx, unl_embeddings, advance)
    summary = targets.summary()
    if args.pseudo_head_share > 0 and args.fit_heads:
        summary["pseudo_head_labels"] = refit_teacher_head(
            teacher, targets, lab_embeddings, data.teacher_lab_y, unl_embeddings, data.check_rows, args, ctx
        )
        if cached is not None:
            with torch.no_grad(), autocast(ctx.device):  # as embed_with_branches ran the head
                cached = teacher.head(unl_embeddings.to(ctx.device)).float().cpu()
    seconds = time.perf_counter() - tic
    refresh_at = set(refresh_steps(steps, args.graph_refreshes))
    cache = None if cached is None else teacher_cache(cached, unl_embeddings, args)
    return Graph(targets, summary, seconds, refresh_at=refresh_at, teacher_cache=cache, student_embeddings=student_embeddings or None)


def propagate_teacher_labels(
    teacher: NanoClassifier,
    data: Data,
    args: TrainArgs,
    ctx: dist.Context,
    unl_embeddings: torch.Tensor | None = None,
    advance: Advance | None = None,
) -> tuple[GraphTargets, torch.Tensor, torch.Tensor]:
    """The teacher's labels spread over the pool on its embeddings (computed unless given)."""
    return propagate_from(
        teacher,
        data.teacher_lab,
        data.teacher_lab_y,
        data.unl,
        data.num_classes,
        args.graph_k,
        args.eval_tokens,
        ctx.device,
        unl_embeddings,
        advance,
        args.graph_alpha,
    )


def refit_teacher_head(
    teacher: NanoClassifier,
    targets: GraphTargets,
    lab_embeddings: torch.Tensor,
    lab_y: torch.Tensor,
    unl_embeddings: torch.Tensor,
    held_out: np.ndarray,
    args: TrainArgs,
    ctx: dist.Context,
) -> int:
    """3. (--pseudo-head-share) the teacher's head refitted on the labels plus each class's
    most certain propagated labels, none of the `held_out` rows; returns how many
    pseudo-labels it took."""
    rows, pseudo = outside(*most_certain_per_class(targets, args.pseudo_head_share), held_out)
    fit_head(teacher, torch.cat([lab_embeddings, unl_embeddings[rows]]), torch.cat([lab_y, pseudo]), targets.probs.shape[1])
    dist.broadcast_module(teacher.head, ctx)  # every rank distils from rank 0's head
    return len(rows)


def fit_pseudo_heads(members: list[Member], data: Data, graph: Graph, args: TrainArgs, ctx: dist.Context, show: bool = False) -> None:
    """3. (--student-pseudo-head-share) each student's head fitted again, on its own
    embeddings of its labels plus each class's most certain propagated labels: a frozen
    student's probe on thousands of pseudo-labels starts it far above one on a few dozen
    labels. The count goes to the report."""
    if not fits_pseudo_heads(args, len(members)) or graph.targets is None:
        return
    rows, pseudo = outside(*student_head_targets(graph, args), data.check_rows)
    students = members[1:]
    with phase_bar(show, "student heads", len(data.head_lab) * len(students), "texts") as advance:
        for m, pool_embeddings in zip(students, graph.student_embeddings):  # from label propagation's pass over the pool
            m.model.to(ctx.device)
            lab_embeddings = embed(m.model, data.head_lab, args.eval_tokens, ctx.device, advance)
            unl_embeddings = pool_embeddings[rows]
            fit_head(m.model, torch.cat([lab_embeddings, unl_embeddings]), torch.cat([data.head_lab_y, pseudo]), data.num_classes)
            dist.broadcast_module(m.model.head, ctx)  # every rank trains on from rank 0's head
    graph.summary["student_pseudo_head_labels"] = len(rows)
    graph.student_embeddings = None  # only needed here


def student_head_targets(graph: Graph, args: TrainArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool rows the students' heads are fitted on and their labels: each class's most
    certain propagated labels, or (--student-head-targets teacher, when its logits are
    cached already) the finished teacher's prediction for every text of the pool."""
    if args.student_head_targets == "teacher" and graph.teacher_cache is not None:
        return torch.arange(len(graph.teacher_cache.logits)), graph.teacher_cache.logits.argmax(-1)
    return most_certain_per_class(graph.targets, args.student_pseudo_head_share)


def outside(rows: torch.Tensor, labels: torch.Tensor, held_out: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool `rows` (and their `labels`) that are not `held_out` (the check texts, which
    no head may fit for the comparison in check_start to be fair)."""
    keep = ~torch.isin(rows, torch.as_tensor(held_out, dtype=rows.dtype))
    return rows[keep], labels[keep]


def fits_pseudo_heads(args: TrainArgs, members: int) -> bool:
    """Whether the students' heads are fitted on propagated labels (--student-pseudo-head-share)."""
    return args.student_pseudo_head_share > 0 and args.fit_heads and members >= 2


def refresh_graph(graph: Graph, teacher: NanoClassifier, data: Data, args: TrainArgs, ctx: dist.Context, step: int) -> None:
    """3. (again) label propagation on the training teacher's embeddings, which by now
    separate the classes better than the pretrained ones; the record goes to the report."""
    tic = time.perf_counter()
    new, _, _ = propagate_teacher_labels(teacher, data, args, ctx)
    changed = changed_share(graph.targets, new)
    graph.refreshes.append({"step": step, **new.summary(), "changed": round(changed, 4), "seconds": round(time.perf_counter() - tic, 1)})
    graph.targets = new


def make_trainable(members: list[Member], args: TrainArgs, steps: int, ctx: dist.Context):
    """4. what each member trains (bias terms and heads by default), the cohort module that
    computes the losses (wrapped for DDP where distributed), and its optimizer and schedule."""
    for m in members:
        m.trainable, m.total = set_trainable(m.model, args.teacher_trainable if m.name == "teacher" else args.trainable)
    cohort = Cohort(
        members[0].model,
        [m.model for m in members[1:]],
        args.temperature,
        args.kd_weight,
        args.hidden_weight,
        args.mutual_loss,
        args.self_train_weight,
        args.confidence,
        args.graph_weight,
        args.student_graph_weight,
        args.embedding_weight,
    )
    cohort.to(ctx.device).train()
    optimizer, scheduler = build_optimizer(cohort, args, steps)
    return cohort, optimizer, scheduler


def start_or_resume(
    out: Path,
    args: TrainArgs,
    cohort: Cohort,
    optimizer,
    scheduler,
    members: list[Member],
    graph: Graph,
    ctx: dist.Context,
    phases: Phases,
) -> Run:
    """A fresh run, or with --resume the saved state of the run in `out`; a fresh run never
    overwrites a previous run's state."""
    if not args.resume:
        # the time before the first step (the contrastive phase, the graph) is part of the run's time
        return Run(seconds=sum(v for k, v in phases.seconds.items() if k in ("contrastive", "heads", "propagation")))
    start, history, tokens_seen, seconds, saved_graph = load_state(
        out / "state", args, cohort, optimizer, scheduler, members, ctx.world_size
    )
    graph.refreshes = saved_graph["refreshes"]
    if "probs" in saved_graph:
        graph.targets = GraphTargets(saved_graph["probs"], saved_graph["weights"])
    return Run(start, history, tokens_seen, seconds)


def distils_offline(args: TrainArgs, data: Data) -> bool:
    """--distill offline, for a run that has unlabeled text to distil on."""
    return args.distill == "offline" and data.uses_unlabeled


def teacher_only_steps(args: TrainArgs, steps: int) -> int:
    """The teacher's warm-up: steps in which it trains alone (the students get at least half)."""
    return min(args.teacher_warmup_steps, steps // 2)


def step_inputs(
    data: Data,
    members: list[Member],
    graph: Graph,
    args: TrainArgs,
    step: int,
    k: int,
    steps: int,
    ctx: dist.Context,
    cache: TeacherCache | None = None,
) -> tuple[StepInputs, int]:
    """5. one step's batches: labeled rows, and (once the students train, or for the graph
    term during the teacher's warm-up) unlabeled rows with each student's view of them.
    With `cache` (offline distillation, after the warm-up) the teacher is done: its cached
    logits (and embeddings) of the unlabeled rows come instead of its own terms.
    Returns the inputs and the tokens they hold."""
    warmup = teacher_only_steps(args, steps)
    lab_rows = data.lab_stream[k]
    labeled = packed_rows(data.lab, lab_rows).to(ctx.device)
    labels = data.lab_y[lab_rows].to(ctx.device)
    active = step >= warmup
    if not data.uses_unlabeled or not (active or graph.targets is not None):
        return StepInputs(labeled, labels, active), labeled.num_tokens
    unl_rows = data.unl_stream[k]
    unlabeled = packed_rows(data.unl, unl_rows)
    g = torch.Generator().manual_seed(args.seed * 1_000_003 + k)
    views = []
    for m in members[1:] if active else []:
        view = cutoff(unlabeled, args.cutoff_rate, g) if m.view == "cutoff" else unlabeled
        views.append((view.to(ctx.device), args.noise_std if m.view == "noise" else 0.0))
    weight = args.mutual_weight * ramp(step - warmup, max(1, steps - warmup), args.mutual_rampup) if active else 0.0
    offline = cache is not None and active
    needs_view = (args.self_train_weight > 0 or graph.targets is not None) and not offline
    teacher_view = cutoff(unlabeled, args.cutoff_rate, g).to(ctx.device) if needs_view else None
    rows = torch.as_tensor(unl_rows, dtype=torch.long)
    probs = weights = None
    if graph.targets is not None:
        probs, weights = graph.targets.probs[rows].to(ctx.device), graph.targets.weights[rows].to(ctx.device)
    cached = TeacherCache(None)
    if offline:  # this batch's rows of the cache
        cached = TeacherCache(*(None if t is None else t[rows].to(ctx.device) for t in cache))
    inputs = StepInputs(
        labeled, labels, active, unlabeled.to(ctx.device), views, weight, teacher_view, probs, weights, cached.logits, cached.embeddings
    )
    return inputs, labeled.num_tokens + unlabeled.num_tokens


def run_steps(
    run: Run,
    data: Data,
    members: list[Member],
    cohort: Cohort,
    optimizer,
    scheduler,
    graph: Graph,
    args: TrainArgs,
    steps: int,
    ctx: dist.Context,
    show: bool,
    on_step: Callable[[int], None] | None,
) -> None:
    """5. the optimizer steps, with a dev evaluation and the resume state every --eval-every steps."""
    model = dist.wrap(cohort, ctx)
    bar = progress_bar(show, steps, run.start)
    warmup = teacher_only_steps(args, steps)
    tic, seconds_before = time.perf_counter(), run.seconds
    try:
        for step in range(run.start, steps):
            if graph.targets is not None and step in graph.refresh_at:
                refresh_graph(graph, members[0].model, data, args, ctx, step)
            offline = distils_offline(args, data) and step >= warmup
            if offline and run.teacher_cache is None:
                with run.phases("cache"):
                    run.teacher_cache = finish_teacher(members[0], data, args, ctx, step, step == warmup, graph.teacher_cache)
            k = step * ctx.world_size + ctx.rank
            inputs, tokens = step_inputs(data, members, graph, args, step, k, steps, ctx, run.teacher_cache if offline else None)
            with run.phases("steps"):
                with autocast(ctx.device):
                    terms = model(inputs)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                scheduler.step()
            run.tokens_seen += tokens * ctx.world_size
            loss = float(terms["total"].detach())
            run.seconds = seconds_before + time.perf_counter() - tic
            done = step + 1
            if done % args.eval_every == 0 or done == steps:
                record = {"step": done, "loss": round(loss, 5)}
                record.update({k: round(float(v.detach()), 5) for k, v in terms.items() if k != "total"})
                with run.phases("dev"):
                    training = members[1:] if run.teacher_cache is not None else members  # a finished teacher stays as it was
                    record["dev"] = evaluate_members(training, data.dev, data.splits.dev_ids, data.num_classes, args.eval_tokens, ctx, done)
                record["rss_mb"] = rss_mb()
                run.history.append(record)
                if ctx.rank == 0:
                    run.seconds = seconds_before + time.perf_counter() - tic  # the evaluation included
                    save_state(
                        Path(args.out) / "state",
                        args,
                        cohort,
                        optimizer,
                        scheduler,
                        members,
                        done,
                        run.history,
                        run.tokens_seen,
                        run.seconds,
                        ctx.world_size,
                        graph.targets,
                        graph.refreshes,
                    )
                dist.barrier(ctx)
            if bar:
                dev = run.history[-1]["dev"] if run.history else {}
                dev_acc = max((dev[m.name]["accuracy"] for m in members[1:] if m.name in dev), default=None)
                bar.update(done, loss, dev_acc, run.tokens_seen / max(run.seconds, 1e-9))
            if on_step:
                on_step(done)
    finally:
        if bar:
            bar.close()
    run.seconds = seconds_before + time.perf_counter() - tic


def keep_start_or_trained(
    run: Run, members: list[Member], starts: list[dict] | None, data: Data, args: TrainArgs, ctx: dist.Context
) -> dict | None:
    """6. (--check-texts) each student keeps its state as it started or as trained,
    whichever agrees more with the teacher on the held-out check texts (selection.check_start);
    the teacher's predictions come from its cached logits, or from its kept state online.
    The seconds count as training time."""
    if starts is None:
        return None
    tic = time.perf_counter()
    with run.phases("check"):
        check = data.unl.select(data.check_rows)
        if run.teacher_cache is not None:
            teacher_pred = run.teacher_cache.logits[torch.as_tensor(data.check_rows)].argmax(-1).numpy()
        else:
            teacher = members[0]
            if teacher.best_state is not None:
                teacher.model.load_state_dict(teacher.best_state, strict=False)
            teacher_pred = predict(teacher.model, check, args.eval_tokens, ctx.device)
        records = check_start(
            members[1:], starts, check, teacher_pred, data.dev, data.splits.dev_ids, data.num_classes, args.eval_tokens, ctx
        )
    run.seconds += time.perf_counter() - tic
    return {"texts": len(data.check_rows), "students": records}


def finish_teacher(
    teacher: Member, data: Data, args: TrainArgs, ctx: dist.Context, step: int, score: bool, cached: TeacherCache | None = None
) -> TeacherCache:
    """5. offline distillation: the teacher's training ends here. With `score` its final
    state is scored on dev (it keeps this state unless an earlier one did better beyond the
    dev noise); a resumed run past this point has that score in its saved state already.
    Its logits on the whole unlabeled pool, clean text in eval mode as the online targets
    are, become the students' cached targets, with its pooled embeddings of it under
    --embedding-weight (`cached` when label propagation's pass made them already); a
    resumed run rebuilds them the same way."""
    scored_here = teacher.best["accuracy"] >= 0 and teacher.best["step"] == step  # by the regular dev check just before
    if score and not scored_here:
        evaluate_members([teacher], data.dev, data.splits.dev_ids, data.num_classes, args.eval_tokens, ctx, step)
    if cached is not None:
        return cached
    embeddings, out = embed_and_logits(teacher.model, data.unl, args.eval_tokens, ctx.device)  # one pass gives both
    return teacher_cache(out, embeddings, args)


def teacher_cache(logits: torch.Tensor, embeddings: torch.Tensor, args: TrainArgs) -> TeacherCache:
    """The students' cached targets: the embeddings are kept only when a loss reads them."""
    return TeacherCache(logits, embeddings if args.embedding_weight > 0 else None)


def select_student(members: list[Member], data: Data, args: TrainArgs, ctx: dist.Context, show: bool = False) -> tuple[list[dict], dict]:
    """6. every member back to the state it kept, its test figures, and the student to ship
    (chosen on dev only; see selection.choose_student)."""
    for m in members:
        if m.best_state is not None:
            m.model.load_state_dict(m.best_state, strict=False)
    test_texts = len(data.test) if data.splits.test_ids else 0
    with phase_bar(show, "test", test_texts * len(members), "texts") as advance:
        results = [
            {
                "name": m.name,
                "layers": m.layers,
                "view": m.view,
                "dev": {k: m.best[k] if len(data.dev) else None for k in ("accuracy", "macro_f1")},
                "best_step": m.best["step"],
                "dev_peak": m.best["peak"],
                "test": evaluate(m.model, data.test, data.splits.test_ids, data.num_classes, args.eval_tokens, ctx.device, advance),
                "trainable_parameters": m.trainable,
                "parameters": m.total,
            }
            for m in members
        ]
    selection = None
    if ctx.rank == 0:
        # a run that trains on labels only never reads unlabeled text, not even to break a tie
        unl = data.unl if data.uses_unlabeled else None
        selection = choose_student(members, len(data.dev), unl, args.seed, args.eval_tokens, ctx.device)
    return results, dist.broadcast_object(selection, ctx)


def build_report(
    args: TrainArgs,
    data: Data,
    train_texts: list[str],
    graph: Graph,
    run: Run,
    results: list[dict],
    selection: dict,
    steps: int,
    backend: str,
    cohort: Cohort,
    ctx: dist.Context,
) -> dict:
    """7. the report: settings, every labeled example's hash, each member's figures, the
    choice and why, training speed, and the weights' digest on every rank."""
    splits = data.splits
    unl_batches = [data.unl_stream[k] for k in range(min(data.unl_stream.batches_per_epoch(), steps * ctx.world_size))]
    propagation = None
    if graph.targets is not None:
        propagation = {**graph.summary, "seconds": round(graph.seconds, 1), "refreshes": graph.refreshes}
    return {
        "nanonet_version": __version__,
        "settings": args.to_dict(),
        "data": {
            **splits.summary(),
            "labels": splits.labels,
            "warnings": splits.warnings,
            "labeled_sha256": _digest(splits.labeled_texts, splits.labeled_ids),
            "train_sha256": _digest(train_texts),
            "max_length": data.max_length,
            "propagation": propagation,
        },
        "start_check": run.start_check,
        "teacher": results[0],
        "students": results[1:],
        "chosen_student": selection["chosen"],
        "selection": selection,
        "training": {
            "steps": steps,
            "seconds": round(run.seconds, 1),
            "tokens": run.tokens_seen,
            "tokens_per_second": round(run.tokens_seen / max(run.seconds, 1e-9), 1),
            "padding_avoided": round(padding_share(data.unl.lengths, unl_batches), 4),
            "device": ctx.device.type,
            "world_size": ctx.world_size,
            "attention_backend": backend,
        },
        "ranks": dist.gather_weight_digests(cohort, ctx),
        "history": run.history,
    }


def save_run(
    out: Path, members: list[Member], chosen: int, labels: list[str], teacher_src: Pretrained, args: TrainArgs, report: dict
) -> None:
    """7. the chosen student and the teacher as checkpoints, and report.json (each written atomically)."""
    student = members[chosen]
    provenance = {
        "teacher": args.teacher,
        "labeled_sha256": report["data"]["labeled_sha256"],
        "dev": student.best,
        "layers": student.layers,
    }
    save_checkpoint(out / "student", student.model, labels, teacher_src.path, {"provenance": provenance})
    save_checkpoint(out / "teacher", members[0].model, labels, teacher_src.path, {"provenance": {"teacher": args.teacher}})
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")


def _digest(texts: list[str], labels: list[int] | None = None) -> str:
    h = hashlib.sha256()
    for i, t in enumerate(texts):
        h.update(t.encode())
        h.update(b"\0" if labels is None else f"\0{labels[i]}\0".encode())
    return h.hexdigest()


def _backend(name: str, device: torch.device, head_size: int, dropout: bool) -> str:
    """The attention backend training will use (bf16 on CUDA, fp32 on CPU, with the model's
    attention dropout); a bad --attention is a one-line error."""
    from nanonet.model.attention import pick_backend

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return pick_backend(device, dtype, head_size, name, dropout).name
    except ValueError as e:
        raise NanonetError(f"--attention: {e}") from None
