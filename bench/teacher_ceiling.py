"""Where the teacher's ceiling is: its adapted embeddings, or the labels its head is fitted on.

A default run fits the teacher's head (a logistic regression on its adapted embeddings) on
its labels plus the pool's propagated labels, and the student's head the same way on its own
embeddings. This script builds that point for a set and seed (bench/tuning.py's
directories; test files are never read) and refits both heads on other labels for the
pool, scoring each on the tuning split:

  - none: the member's own labels alone (the teacher's include the selection labels);
  - propagated: the default (and with other graph_k / graph_alpha values);
  - gold: the pool's own labels from the train file, which no run sees: about the most
    any labelling of the pool can give the same embeddings, so the distance from the
    default to it says what better pseudo-labels could buy.

It also reports the share of the pool whose propagated label is right.

    python bench/teacher_ceiling.py --sets ag_news,yahoo_answers,hwu64 --seeds 1,2,3

Results go to bench/results/teacher_ceiling.json (a rerun skips a set and seed already
there; --redo replaces) and a table is printed: tuning-dev accuracy (%) of the teacher and
of the student as it starts, per labelling of the pool.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("NANONET_NO_PROGRESS", "1")

import torch  # noqa: E402
from _adapted import adapted_run  # noqa: E402  (bench/_adapted.py, beside this file)
from tuning import DATA, tuning_dir  # noqa: E402  (bench/tuning.py, beside this file)

from nanonet.data.splits import load_tables  # noqa: E402
from nanonet.runtimes.fsutil import atomic_write_text  # noqa: E402
from nanonet.train import trainer  # noqa: E402
from nanonet.train.evaluate import embed, embed_with_branches  # noqa: E402
from nanonet.train.heads import fit_head  # noqa: E402
from nanonet.train.propagation import most_certain_per_class, propagate  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "teacher_ceiling.json"
GRAPHS = {"propagated": {}, "propagated, k 5": {"k": 5}, "propagated, k 20": {"k": 20}, "propagated, alpha 0.99": {"alpha": 0.99}}


@dataclasses.dataclass
class Embedded:
    """One member's embeddings of the labeled texts, the pool and the tuning split."""

    labeled: torch.Tensor
    labeled_y: torch.Tensor
    pool: torch.Tensor
    tune: torch.Tensor


def pool_gold(name: str, splits) -> torch.Tensor:
    """The train file's labels of the pool (the pool is train's rows less the drawn ones),
    looked up by text; a pool text the file holds under two labels is refused."""
    train = load_tables(str(tuning_dir(name, DATA)))["train"]
    labels_of: dict[str, set[str]] = {}
    for text, label in zip(train.texts, train.labels):
        labels_of.setdefault(text, set()).add(label)
    ambiguous = sum(len(labels_of[text]) > 1 for text in splits.unlabeled_texts)
    if ambiguous:
        raise SystemExit(f"{name}: {ambiguous} pool texts stand in the train file under two labels")
    return torch.tensor([splits.labels.index(next(iter(labels_of[text]))) for text in splits.unlabeled_texts])


def probe_accuracy(
    member: Embedded, pool_labels: tuple[torch.Tensor, torch.Tensor] | None, gold_tune: torch.Tensor, num_classes: int
) -> float:
    """Tuning-dev accuracy of a head fitted as a run fits it (nanonet.train.heads.fit_head) on
    the member's labels plus the pool rows and labels of `pool_labels` (None: the labels alone)."""
    probe = SimpleNamespace(head=torch.nn.Linear(member.tune.shape[1], num_classes))
    x, y = member.labeled, member.labeled_y
    if pool_labels is not None:
        rows, labels = pool_labels
        x, y = torch.cat([x, member.pool[rows]]), torch.cat([y, labels])
    fit_head(probe, x, y, num_classes)
    with torch.no_grad():
        return round(100 * float((probe.head(member.tune).argmax(-1) == gold_tune).float().mean()), 2)


def ceiling(name: str, seed: int, labels_per_class: int, threads: int) -> dict:
    """The adapted teacher and the default student of a default run, each head refitted per labelling of the pool."""
    tic = time.perf_counter()
    run = adapted_run(name, seed, labels_per_class, threads)
    args, splits, data, cpu = run.args, run.splits, run.data, torch.device("cpu")
    members = trainer.rebuild_students(run.members, run.src, data.num_classes)  # as a run: the students copy the adapted teacher
    teacher, student = members[0].model, members[1].model
    pool, _, (student_pool,) = embed_with_branches(teacher, [student], data.unl, args.eval_tokens, cpu)
    tune, _, (student_tune,) = embed_with_branches(teacher, [student], data.test, args.eval_tokens, cpu)
    members = {
        "teacher": Embedded(embed(teacher, data.teacher_lab, args.eval_tokens, cpu), data.teacher_lab_y, pool, tune),
        "student": Embedded(embed(student, data.head_lab, args.eval_tokens, cpu), data.head_lab_y, student_pool, student_tune),
    }
    gold_pool, gold_tune = pool_gold(name, splits), torch.tensor(splits.test_ids)
    labellings = {"none": None, "gold": (torch.arange(len(gold_pool)), gold_pool)}
    pool_accuracy = {}
    for label, graph in GRAPHS.items():
        k, alpha = graph.get("k", args.graph_k), graph.get("alpha", args.graph_alpha)
        targets = propagate(members["teacher"].labeled, data.teacher_lab_y, pool, data.num_classes, k=k, alpha=alpha)
        labellings[label] = most_certain_per_class(targets, args.pseudo_head_share)  # as a run's heads take them
        pool_accuracy[label] = round(100 * float((targets.probs.argmax(-1) == gold_pool).float().mean()), 2)
    accuracy = {
        m: {label: probe_accuracy(e, labels, gold_tune, data.num_classes) for label, labels in labellings.items()}
        for m, e in members.items()
    }
    return {
        "set": name,
        "seed": seed,
        "pool": len(gold_pool),
        "pool_accuracy": pool_accuracy,
        **accuracy,
        "seconds": round(time.perf_counter() - tic, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,yahoo_answers,hwu64")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--redo", action="store_true")
    args = ap.parse_args()
    runs = json.loads(OUT.read_text())["runs"] if OUT.is_file() else []
    for name in args.sets.split(","):
        for seed in map(int, args.seeds.split(",")):
            if not args.redo and any((r["set"], r["seed"]) == (name, seed) for r in runs):
                continue
            run = ceiling(name, seed, args.labels_per_class, args.threads)
            runs = [r for r in runs if (r["set"], r["seed"]) != (name, seed)] + [run]
            atomic_write_text(OUT, json.dumps({"benchmark": "teacher_ceiling", "runs": runs}, indent=2) + "\n")
            print(f"{name} seed {seed}: teacher {run['teacher']}, student {run['student']} ({run['seconds']:.0f}s)", flush=True)
    print(markdown(runs))


def markdown(runs: list[dict]) -> str:
    """Per set, the mean over its seeds: each labelling's teacher / student accuracy and the pool's propagated-label accuracy."""
    labellings = ["none", *GRAPHS, "gold"]
    lines = ["| set | seeds | " + " | ".join(labellings) + " | propagated labels right (pool %) |", "|---" * (3 + len(labellings)) + "|"]
    for name in dict.fromkeys(r["set"] for r in runs):
        rs = [r for r in runs if r["set"] == name]
        cells = [f"{mean(rs, 'teacher', label)} / {mean(rs, 'student', label)}" for label in labellings]
        pool = statistics.mean(r["pool_accuracy"]["propagated"] for r in rs)
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + f" | {pool:.1f} |")
    return "\n".join(lines)


def mean(runs: list[dict], member: str, label: str) -> str:
    return f"{statistics.mean(r[member][label] for r in runs):.1f}"


if __name__ == "__main__":
    main()
