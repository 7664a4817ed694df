"""What a student is worth before it trains: tuning-dev accuracy of each layer choice.

A default run copies the student's layers from the adapted teacher and fits its head on its
labels plus every propagated label before its first step (docs/method.md). This script
builds that starting point for several layer choices (nine of 3 layers, or those of
--layers) of the same adapted teacher, from one pass over the pool (each student runs only
the layers it does not share with the teacher's first ones), and scores each on the set's
tuning split (bench/tuning.py's directories; test files are never read). Beside a tuning
run of the defaults it tells how much the student's steps add to where its frozen layers
start.

    python bench/frozen_students.py --sets yahoo_answers --seeds 2
    python bench/frozen_students.py --sets ag_news --seeds 1 --layers "0,1,5;0,1,4,5"

Results go to bench/results/frozen_students.json (a rerun skips a set and seed that has
every choice asked for, and adds new choices to it; --redo replaces) and a table is
printed: tuning-dev accuracy (%) of the teacher and of each student before its first step.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NANONET_NO_PROGRESS", "1")

import torch  # noqa: E402
from _adapted import adapted_run  # noqa: E402  (bench/_adapted.py, beside this file)

from nanonet.model.checkpoint import make_student  # noqa: E402
from nanonet.model.encoder import NanoClassifier  # noqa: E402
from nanonet.runtimes.fsutil import atomic_write_text  # noqa: E402
from nanonet.train import trainer  # noqa: E402
from nanonet.train.evaluate import embed_with_branches  # noqa: E402
from nanonet.train.selection import Member  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "frozen_students.json"
LAYERS = ([0, 1, 5], [0, 2, 5], [0, 3, 5], [0, 4, 5], [1, 2, 5], [0, 1, 4], [0, 2, 4], [1, 3, 5], [0, 1, 2])


def accuracy(model: NanoClassifier, embeddings: torch.Tensor, gold: torch.Tensor) -> float:
    with torch.no_grad():
        return round(100 * float((model.head(embeddings).argmax(-1) == gold).float().mean()), 2)


def starting_points(name: str, seed: int, labels_per_class: int, threads: int, choices: list[list[int]]) -> dict:
    """The adapted teacher of a default run, and each student as it would start: its head
    fitted on its labels plus every propagated label, scored on the tuning split."""
    tic = time.perf_counter()
    run = adapted_run(name, seed, labels_per_class, threads)
    args, ctx, splits, src, data, members = run.args, run.ctx, run.splits, run.src, run.data, run.members
    teacher, cpu = members[0].model, torch.device("cpu")
    students = [
        Member(f"student {i}", NanoClassifier(make_student(teacher.encoder, layers), data.num_classes, src.pooling), layers, None)
        for i, layers in enumerate(choices)
    ]
    models = [m.model for m in students]
    # as a run: propagation over the teacher's pass (which gives the students' embeddings), the teacher's head refitted, the students' heads fitted
    pool, _, students_pool = embed_with_branches(teacher, models, data.unl, args.eval_tokens, cpu)
    targets, labeled, pool = trainer.propagate_teacher_labels(teacher, data, args, ctx, pool)
    trainer.refit_teacher_head(teacher, targets, labeled, data.teacher_lab_y, pool, data.check_rows, args, ctx)
    trainer.fit_pseudo_heads([members[0], *students], data, trainer.Graph(targets, {}, student_embeddings=students_pool), args, ctx)
    tune, _, students_tune = embed_with_branches(teacher, models, data.test, args.eval_tokens, cpu)
    gold = torch.tensor(splits.test_ids)
    result = {"set": name, "seed": seed, "teacher": accuracy(teacher, tune, gold), "students": {}}
    for layers, student, student_tune in zip(choices, models, students_tune):
        result["students"][",".join(map(str, layers))] = accuracy(student, student_tune, gold)
    result["seconds"] = round(time.perf_counter() - tic, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,hwu64,yahoo_answers")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", default=None, help="the choices, e.g. '0,1,5;0,1,2,5' (default: nine 3-layer ones)")
    ap.add_argument("--redo", action="store_true")
    args = ap.parse_args()
    choices = [list(map(int, c.split(","))) for c in args.layers.split(";")] if args.layers else list(LAYERS)
    wanted = {",".join(map(str, c)) for c in choices}
    runs = json.loads(OUT.read_text())["runs"] if OUT.is_file() else []
    for name in args.sets.split(","):
        for seed in map(int, args.seeds.split(",")):
            before = next((r for r in runs if (r["set"], r["seed"]) == (name, seed)), None)
            if not args.redo and before and wanted <= set(before["students"]):
                continue
            run = starting_points(name, seed, args.labels_per_class, args.threads, choices)
            if before and not args.redo:  # the same adapted teacher (same seed): the new choices join the old ones
                run["students"] = {**before["students"], **run["students"]}
            runs = [r for r in runs if (r["set"], r["seed"]) != (name, seed)] + [run]
            atomic_write_text(OUT, json.dumps({"benchmark": "frozen_students", "runs": runs}, indent=2) + "\n")
            print(f"{name} seed {seed}: teacher {run['teacher']}, students {run['students']} ({run['seconds']:.0f}s)", flush=True)
    print(markdown(runs))


def markdown(runs: list[dict]) -> str:
    names = list(dict.fromkeys(n for r in runs for n in r["students"]))
    lines = ["| set | seed | teacher | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for r in sorted(runs, key=lambda r: (r["set"], r["seed"])):
        lines.append(f"| {r['set']} | {r['seed']} | {r['teacher']} | " + " | ".join(str(r["students"].get(n, "-")) for n in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
