"""`nanonet train` and `nanonet eval`: the torch side, imported only when they run."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nanonet.cli.app import app, parse_layers, pct, stdout
from nanonet.runtimes.errors import NanonetError


def _layer_sets(value: Optional[str]) -> Optional[list[list[int]]]:
    """'0,2,4/1,3,5' -> [[0, 2, 4], [1, 3, 5]]."""
    if value is None:
        return None
    return [parse_layers(part) or [] for part in value.split("/")]


@app.command()
def train(
    data: Optional[str] = typer.Option(
        None, "--data", help="Directory with train/dev/test files, a train file, or a datasets name (N per class drawn from train)."
    ),
    labeled: list[str] = typer.Option(
        [], "--labeled", help="Instead of --data: a file of your labeled rows (repeatable; any number per class), with --unlabeled POOL."
    ),
    dev: Optional[str] = typer.Option(None, "--dev", help="With --labeled: labeled rows for model selection (none: final states kept)."),
    test: Optional[str] = typer.Option(None, "--test", help="With --labeled: labeled rows to report test figures on."),
    out: str = typer.Option(..., "--out", help="Run directory (student/, teacher/, report.json)."),
    labels_per_class: int = typer.Option(10, "--labels-per-class", help="N labeled examples drawn per class."),
    dev_per_class: int = typer.Option(
        0,
        "--dev-per-class",
        help="Labeled examples per class held for model selection, from the dev file or held out from train "
        "(default 0: every label trains, final states ship).",
    ),
    seed: int = typer.Option(1, "--seed"),
    teacher: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--teacher", help="Teacher checkpoint, hub id or the default."),
    unlabeled: list[str] = typer.Option([], "--unlabeled", help="Extra unlabeled text file (repeatable)."),
    max_unlabeled: Optional[int] = typer.Option(
        None, "--max-unlabeled", help="At most this many unlabeled texts, drawn by seed (default: all); the run's cost follows it."
    ),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    max_length: int = typer.Option(
        128, "--max-length", help="Truncate texts to L tokens, in training and in what ships (at most the teacher's max length)."
    ),
    students: int = typer.Option(1, "--students", help="K students in the cohort (2 or more: mutual learning, and the best ships)."),
    student_layers: Optional[str] = typer.Option(None, "--student-layers", help="Teacher layers per student, e.g. 0,2,4/1,3,5."),
    trainable: str = typer.Option("bias", "--trainable", help="What the students train: bias | bias+norm | all"),
    teacher_trainable: str = typer.Option("bias", "--teacher-trainable", help="What the teacher trains: bias | bias+norm | all"),
    contrastive_steps: int = typer.Option(
        40, "--contrastive-steps", help="Supervised contrastive steps adapting the whole teacher to the labels first (0: off)."
    ),
    contrastive_stop_gap: float = typer.Option(
        0.05, "--contrastive-stop-gap", help="End the contrastive steps once the loss is within this of its floor (0: run them all)."
    ),
    students_from: str = typer.Option(
        "adapted", "--students-from", help="Copy the students' layers from the pretrained or the adapted teacher: pretrained | adapted"
    ),
    fit_heads: bool = typer.Option(True, "--fit-heads/--random-heads", help="Start each head as a logistic regression on its embeddings."),
    distill: str = typer.Option(
        "offline", "--distill", help="online: the teacher trains throughout; offline: its logits are cached after its warm-up."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: --epochs over the unlabeled pool)."),
    epochs: float = typer.Option(0.5, "--epochs", help="Passes over the unlabeled pool when --steps is not given."),
    min_steps: int = typer.Option(30, "--min-steps", help="With --epochs: at least this many steps."),
    min_steps_per_class: int = typer.Option(
        2, "--min-steps-per-class", help="With --epochs: at least this many steps per class (many classes need more steps)."
    ),
    teacher_warmup_steps: int = typer.Option(
        0,
        "--teacher-warmup-steps",
        help="Steps the teacher trains alone in the cohort before the students start (0: the adapted teacher is final).",
    ),
    eval_every: int = typer.Option(25, "--eval-every", help="Resume state, and dev evaluation when there are dev labels, every M steps."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Students' encoder learning rate (default 3e-3 for bias, 5e-5 for all)."),
    teacher_lr: Optional[float] = typer.Option(None, "--teacher-lr", help="Teacher's encoder learning rate (same defaults)."),
    graph_weight: float = typer.Option(1.0, "--graph-weight", help="Teacher's loss on labels propagated over the unlabeled pool (0: off)."),
    student_graph_weight: float = typer.Option(1.0, "--student-graph-weight", help="Students' loss on the propagated labels (0: off)."),
    embedding_weight: float = typer.Option(
        0.0, "--embedding-weight", help="Students' embedding distillation: 1 - cosine to the teacher's pooled embedding (0: off)."
    ),
    graph_k: int = typer.Option(10, "--graph-k", help="Neighbours per text in the label-propagation graph."),
    graph_alpha: float = typer.Option(0.9, "--graph-alpha", help="How far labels spread in label propagation, in (0, 1)."),
    graph_refreshes: int = typer.Option(0, "--graph-refreshes", help="Reruns of label propagation on the training teacher's embeddings."),
    teacher_dev_labels: bool = typer.Option(
        True,
        "--teacher-dev-labels/--no-teacher-dev-labels",
        help="The teacher also learns the dev labels (contrastive phase, head, propagation); the students keep to the training labels.",
    ),
    student_dev_labels: bool = typer.Option(
        False,
        "--student-dev-labels/--no-student-dev-labels",
        help="The students also learn the dev labels (heads, labeled batches); their dev checks then measure fit.",
    ),
    student_head_dev_labels: bool = typer.Option(
        False,
        "--student-head-dev-labels/--no-student-head-dev-labels",
        help="The students' heads start fitted on the dev labels too; their labeled batches keep to the training labels.",
    ),
    pseudo_head_share: float = typer.Option(
        1.0,
        "--pseudo-head-share",
        help="Refit the teacher's head on the labels plus this share of each class's most certain propagated labels (0: off).",
    ),
    student_pseudo_head_share: float = typer.Option(
        1.0,
        "--student-pseudo-head-share",
        help="Fit each student's head on its labels plus this share of each class's most certain propagated labels (0: off).",
    ),
    student_head_targets: str = typer.Option(
        "graph",
        "--student-head-targets",
        help="What the students' heads are fitted on beside their labels: graph (propagated labels) or teacher (its predictions).",
    ),
    check_texts: int = typer.Option(
        0,
        "--check-texts",
        help="Unlabeled texts held out to choose each student's state (as it starts or trained) by agreement with the teacher (0: trained).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last saved state."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in a non-empty --out, replacing a previous run's outputs."),
    attention: str = typer.Option("auto", "--attention", help="auto | flash | torch_varlen | sdpa | reference"),
    attention_dropout: float = typer.Option(
        0.0, "--attention-dropout", help="Attention dropout in training (the teacher's config says 0.1 for MiniLM; torch_varlen needs 0)."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Distil a teacher into a cohort of students from N labels per class, or a labeled file (NanoNet)."""
    from nanonet.rundir import check_out_dir

    if (data is None) == (not labeled):
        raise NanonetError(
            "give --data (N labels per class drawn from its train file) or --labeled FILE (your labeled rows), one of the two"
        )
    check_out_dir(out, resume, overwrite)  # before torch and the teacher load (seconds)
    from nanonet.train import TrainArgs
    from nanonet.train import train as run

    args = TrainArgs(
        data=data,
        out=out,
        labeled=list(labeled),
        dev=dev,
        test=test,
        labels_per_class=labels_per_class,
        dev_per_class=dev_per_class,
        seed=seed,
        teacher=teacher,
        unlabeled=list(unlabeled),
        max_unlabeled=max_unlabeled,
        text_col=text_col,
        label_col=label_col,
        max_length=max_length,
        students=students,
        student_layers=_layer_sets(student_layers),
        trainable=trainable,
        teacher_trainable=teacher_trainable,
        contrastive_steps=contrastive_steps,
        contrastive_stop_gap=contrastive_stop_gap,
        students_from=students_from,
        fit_heads=fit_heads,
        distill=distill,
        steps=steps,
        epochs=epochs,
        min_steps=min_steps,
        min_steps_per_class=min_steps_per_class,
        teacher_warmup_steps=teacher_warmup_steps,
        eval_every=eval_every,
        lr=lr,
        teacher_lr=teacher_lr,
        graph_weight=graph_weight,
        student_graph_weight=student_graph_weight,
        embedding_weight=embedding_weight,
        graph_k=graph_k,
        graph_alpha=graph_alpha,
        graph_refreshes=graph_refreshes,
        teacher_dev_labels=teacher_dev_labels,
        student_dev_labels=student_dev_labels,
        student_head_dev_labels=student_head_dev_labels,
        pseudo_head_share=pseudo_head_share,
        student_pseudo_head_share=student_pseudo_head_share,
        student_head_targets=student_head_targets,
        check_texts=check_texts,
        resume=resume,
        overwrite=overwrite,
        attention=attention,
        attention_dropout=attention_dropout,
        threads=threads,
    )
    try:
        report = run(args, progress=not as_json)
    except KeyboardInterrupt:
        raise NanonetError(f"interrupted; continue with the same command plus --resume (state in {out}/state)") from None
    if as_json:
        stdout.print_json(json.dumps({k: v for k, v in report.items() if k != "history"}))
        return
    _print_train_report(report, out)


def _what(report: dict) -> str:
    settings, data = report["settings"], report["data"]
    if settings.get("labeled"):
        counts = data["label_counts"].values()
        return f"{' + '.join(settings['labeled'])}, {data['labeled']} labels ({min(counts)}-{max(counts)} per class)"
    return f"{settings['data']}, {settings['labels_per_class']} labels per class"


def _print_train_report(report: dict, out: str) -> None:
    table = Table(
        title=f"nanonet train: {_what(report)}, seed {report['settings']['seed']}",
        title_justify="left",
    )
    for col in ("model", "layers", "view", "dev acc / F1", "test acc / F1", "trainable / total"):
        table.add_column(col, no_wrap=True)
    chosen = report["chosen_student"]
    for i, r in enumerate([report["teacher"], *report["students"]]):
        name = r["name"] + (" *" if i - 1 == chosen else "")
        table.add_row(
            name,
            ",".join(map(str, r["layers"])),
            r["view"] or "-",
            f"{pct(r['dev']['accuracy'])} / {pct(r['dev']['macro_f1'])}",
            f"{pct(r['test']['accuracy'])} / {pct(r['test']['macro_f1'])}",
            f"{r['trainable_parameters'] / 1e3:,.1f}K / {r['parameters'] / 1e6:,.1f}M",
        )
    how = (
        "best dev accuracy; a lead within the dev set's noise goes to the one agreeing most with the teacher"
        if report["data"]["dev"]
        else "no dev labels: the one agreeing most with the teacher on unlabeled text"
    )
    table.caption = f"* the chosen student ({how}), saved to RUN/student"
    stdout.print(table)
    t, d = report["training"], report["data"]
    stdout.print(
        f"{t['steps']} steps in {t['seconds']:.0f}s, {t['tokens_per_second']:,.0f} tokens/s, {100 * t['padding_avoided']:.0f}% padding avoided; "
        f"{d['labeled']} labeled, {d['unlabeled']} unlabeled, dev {d['dev']} ({d['dev_source']}), test {d['test']}; "
        f"{d['labeled_seen']} labeled examples seen (training + selection)"
    )
    check = report.get("start_check")
    for r in check["students"] if check else []:
        stdout.print(
            f"{r['name']}: kept as {'it started (no step)' if r['kept'] == 'start' else 'trained'}; agreement with the teacher on "
            f"{check['texts']} held-out texts {pct(r['agreement_start'])} as it started, {pct(r['agreement_trained'])} trained"
        )
    stdout.print(f"student: {out}/student  teacher: {out}/teacher  report: {out}/report.json")


@app.command("eval")
def evaluate_command(
    checkpoint: str = typer.Argument(..., help="A nanonet checkpoint directory (e.g. RUN/student)."),
    data: str = typer.Option(..., "--data", help="A labeled file (JSONL, CSV, TSV, Parquet)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Evaluate a checkpoint on a labeled file: accuracy, macro-F1, per-class accuracy."""
    from nanonet.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data, text_col, label_col)
    if as_json:
        stdout.print_json(json.dumps(result))
        return
    table = Table(title=f"nanonet eval: {checkpoint} on {data} ({result['n']} examples)", title_justify="left")
    table.add_column("class")
    table.add_column("n")
    table.add_column("accuracy")
    for name, row in result["per_class"].items():
        table.add_row(escape(name), str(row["n"]), pct(row["accuracy"]))
    table.add_row("[bold]all", str(result["n"]), f"[bold]{pct(result['accuracy'])}[/] (macro-F1 {pct(result['macro_f1'])})")
    stdout.print(table)
