"""Tuning on dev only: each variant of the method against the defaults, scored on dev data.

Test files are never read here. Each set gets a tuning directory (under runs/tuning-data/,
built from ../shared/data with a fixed seed):
  - ag_news has no dev file: 250 per class of its train file are held out as the tuning
    set, and the run draws from the remaining 4,600 rows;
  - yahoo_answers and hwu64: the run draws from train, and their dev file is the tuning set.
The tuning set stands where a run looks for test, so `report["teacher"/"students"]["test"]`
is tuning-dev accuracy. Each run itself sees only its N labels per class, as a user's run
would (the variants before "no selection labels" also held N per class for selection,
from the dev file or out of train, as the defaults then did).

    python bench/tuning.py --sets hwu64 --seeds 1 --variants "v1;defaults"
    python bench/tuning.py --list                       # the variants

Results go to bench/results/tuning.json (a rerun skips what is there; --redo replaces) and
a table is printed: tuning-dev accuracy of the chosen student and the teacher, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("NANONET_NO_PROGRESS", "1")

import numpy as np  # noqa: E402
from _paths import portable  # noqa: E402  (bench/_paths.py, beside this file)

from nanonet.runtimes.fsutil import atomic_write_text  # noqa: E402
from nanonet.train import TrainArgs, train  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
OUT = HERE / "results" / "tuning.json"
TUNE_DIRS = HERE.parent / "runs" / "tuning-data"  # built from the data, not committed
HOLD_OUT_PER_CLASS = 250  # ag_news's tuning set, from its train file

# Each variant is the previous defaults (V1: a cohort of two students trained online with a
# 30-step teacher warm-up, 2 epochs, random heads, no contrastive phase) plus its changes,
# named in the order they were tried ("..." continues the row named before it: "... and at
# least 60 steps" is the two-student defaults, the variants after it change those); "defaults"
# is TrainArgs as it is now.
V1 = dict(
    students=2,
    contrastive_steps=0,
    fit_heads=False,
    distill="online",
    students_from="pretrained",
    teacher_warmup_steps=30,
    epochs=2.0,
    labeled_tokens=2048,
    min_steps=0,
    max_length=256,  # the teacher's own limit, the default until texts were cut at 128 tokens
    contrastive_stop_gap=0.0,  # every contrastive step ran, until they stopped at the loss's floor
    contrastive_lr=5e-5,  # the default until 1e-4
)
CONTRASTIVE = dict(contrastive_steps=40)
HEADS = dict(fit_heads=True)
OFFLINE_ADAPTED = dict(distill="offline", students_from="adapted")
FAST = dict(teacher_warmup_steps=0, epochs=1.0, labeled_tokens=1024)
ONE_STUDENT = {**V1, **CONTRASTIVE, **HEADS, **OFFLINE_ADAPTED, **FAST, "min_steps": 60, "students": 1}
VARIANTS: dict[str, dict] = {
    "v1": V1,
    "v1 +heads": {**V1, **HEADS},
    "v1 +contrastive": {**V1, **CONTRASTIVE},
    "v1 +contrastive +heads": {**V1, **CONTRASTIVE, **HEADS},
    "v1 +contrastive(20 steps x 4k tokens) +heads": {**V1, **HEADS, "contrastive_steps": 20, "contrastive_tokens": 4096},
    "v1 +contrastive +heads, offline": {**V1, **CONTRASTIVE, **HEADS, "distill": "offline"},
    "v1 +contrastive +heads, offline, students adapted": {**V1, **CONTRASTIVE, **HEADS, **OFFLINE_ADAPTED},
    "... and no teacher warm-up": {**V1, **CONTRASTIVE, **HEADS, **OFFLINE_ADAPTED, "teacher_warmup_steps": 0},
    "... and 1024-token batches (with warm-up)": {
        **V1,
        **CONTRASTIVE,
        **HEADS,
        **OFFLINE_ADAPTED,
        "unlabeled_tokens": 1024,
        "labeled_tokens": 1024,
    },
    "... no warm-up, 1 epoch, 1024 labeled tokens": {**V1, **CONTRASTIVE, **HEADS, **OFFLINE_ADAPTED, **FAST},
    "... and at least 60 steps": {**V1, **CONTRASTIVE, **HEADS, **OFFLINE_ADAPTED, **FAST, "min_steps": 60},
    "... and one student": {**V1, **CONTRASTIVE, **HEADS, **OFFLINE_ADAPTED, **FAST, "min_steps": 60, "students": 1},
    "... one student of layers 1,3,5": {
        **V1,
        **CONTRASTIVE,
        **HEADS,
        **OFFLINE_ADAPTED,
        **FAST,
        "min_steps": 60,
        "students": 1,
        "student_layers": [[1, 3, 5]],
    },
    "... two students on 2048-token unlabeled batches, half an epoch": {
        **V1,
        **CONTRASTIVE,
        **HEADS,
        **OFFLINE_ADAPTED,
        **FAST,
        "min_steps": 60,
        "unlabeled_tokens": 2048,
        "epochs": 0.5,
    },
    "... one student, 20 contrastive steps": {
        **V1,
        **HEADS,
        **OFFLINE_ADAPTED,
        **FAST,
        "min_steps": 60,
        "students": 1,
        "contrastive_steps": 20,
    },
    "... one student, 2000 unlabeled texts, 20 contrastive steps": {
        **V1,
        **HEADS,
        **OFFLINE_ADAPTED,
        **FAST,
        "min_steps": 60,
        "students": 1,
        "contrastive_steps": 20,
        "max_unlabeled": 2000,
    },
    "... one student, 4096-token contrastive batches": {**ONE_STUDENT, "contrastive_tokens": 4096},
    "... one student, texts cut at 128 tokens": {**ONE_STUDENT, "max_length": 128},
    "... one student, texts cut at 128 tokens, 4096-token contrastive batches": {
        **ONE_STUDENT,
        "max_length": 128,
        "contrastive_tokens": 4096,
    },
    "defaults": {},
    "defaults, teacher's head refitted on half of each class's propagated labels": {"pseudo_head_share": 0.5, "contrastive_stop_gap": 0.0},
    "defaults, teacher's head refitted on all propagated labels": {"pseudo_head_share": 1.0, "contrastive_stop_gap": 0.0},
    "defaults, contrastive steps ending within 0.05 of the loss's floor": {"contrastive_stop_gap": 0.05},
    "defaults, every contrastive step (none ends at the loss's floor)": {"contrastive_stop_gap": 0.0},
    "defaults, the teacher also learns the selection labels": {"teacher_dev_labels": True},
    "defaults, the teacher keeps to the training labels": {"teacher_dev_labels": False},
    "defaults, the students also learn the selection labels": {"student_dev_labels": True},
    "defaults, at least 120 steps": {"min_steps": 120},
    "defaults, the students' heads start fitted on the selection labels too": {"student_head_dev_labels": True},
    "defaults, the students learn no propagated labels": {"student_graph_weight": 0.0},
    "defaults, contrastive learning rate 1e-4": {"contrastive_lr": 1e-4},
}
LR_1E4 = "defaults, contrastive learning rate 1e-4"
for _name in [n for n in VARIANTS if n.startswith("defaults, ") and n != LR_1E4]:
    VARIANTS[_name] = {"contrastive_lr": 5e-5, **VARIANTS[_name]}  # they ran before 1e-4 was the default
VARIANTS["defaults, contrastive learning rate 5e-5"] = {"contrastive_lr": 5e-5}
# Variants tried after 1e-4 became the default: against the runs of LR_1E4, the defaults then.
VARIANTS["defaults, at most 3000 unlabeled texts"] = {"max_unlabeled": 3000}
VARIANTS["defaults, no attention dropout"] = {"attention_dropout": 0.0}
# No attention dropout became the default: the variants before it ran with the teacher's 0.1.
for _name in [n for n in VARIANTS if n.startswith("defaults, ") and n != "defaults, no attention dropout"]:
    VARIANTS[_name] = {"attention_dropout": None, **VARIANTS[_name]}
# Variants tried after it, against the runs of "defaults, no attention dropout".
VARIANTS["defaults, every head fitted on all propagated labels"] = {"pseudo_head_share": 1.0, "student_pseudo_head_share": 1.0}
LOCAL = {"graph_alpha": 0.9, "pseudo_head_share": 1.0, "student_pseudo_head_share": 1.0}
VARIANTS["defaults, labels spread less far (alpha 0.9), every head on all propagated labels"] = LOCAL
VARIANTS["defaults, labels spread less far (alpha 0.9), every head on them, the students weigh them 4x"] = {
    **LOCAL,
    "student_graph_weight": 4.0,
}
VARIANTS["defaults, every head on all propagated labels, the students weigh them 4x"] = {
    "pseudo_head_share": 1.0,
    "student_pseudo_head_share": 1.0,
    "student_graph_weight": 4.0,
}
VARIANTS["defaults, alpha 0.9, every head on all propagated labels, students of layers 0,1,5"] = {
    **LOCAL,
    "student_layers": [[0, 1, 5]],
}
# The last became the default: the variants before it ran with the defaults it replaced.
NEW_DEFAULTS = "defaults, alpha 0.9, every head on all propagated labels, students of layers 0,1,5"
BEFORE = {"graph_alpha": 0.99, "pseudo_head_share": 0.0, "student_pseudo_head_share": 0.0, "student_layers": [[0, 2, 4]]}
for _name in [n for n in VARIANTS if n.startswith("defaults, ") and n != NEW_DEFAULTS]:
    VARIANTS[_name] = {**BEFORE, **VARIANTS[_name]}
# Variants tried after it, against the runs of NEW_DEFAULTS.
VARIANTS["defaults, labels spread as far as before (alpha 0.99)"] = {"graph_alpha": 0.99}
VARIANTS["defaults, half an epoch, at least 30 steps"] = {"epochs": 0.5, "min_steps": 30}
VARIANTS["defaults, 120 steps at least"] = {"min_steps": 120}
STEPS_NOW = "defaults, half an epoch, at least 30 steps and 2 per class"
VARIANTS[STEPS_NOW] = {"epochs": 0.5, "min_steps": 30, "min_steps_per_class": 2}
# The last became the default: every variant before it ran with one epoch of at least 60
# steps and no floor per class (those that set their own steps keep them).
STEPS_BEFORE = {"epochs": 1.0, "min_steps": 60, "min_steps_per_class": 0}
for _name in [n for n in VARIANTS if n not in (STEPS_NOW, "defaults")]:
    VARIANTS[_name] = {**STEPS_BEFORE, **VARIANTS[_name]}
# Variants tried after it, against the runs of STEPS_NOW.
VARIANTS["defaults, students distil the teacher's embeddings (cosine, weight 1)"] = {"embedding_weight": 1.0}
VARIANTS["defaults, students distil the teacher's embeddings (cosine, weight 10)"] = {"embedding_weight": 10.0}
VARIANTS["defaults, the students' bias terms at learning rate 1e-2"] = {"lr": 1e-2}
VARIANTS["defaults, the students train their LayerNorm weights too"] = {"trainable": "bias+norm"}
VARIANTS["defaults, the students train every weight (learning rate 1e-4)"] = {"trainable": "all", "lr": 1e-4}
VARIANTS["defaults, the students' heads fitted on the teacher's predictions"] = {"student_head_targets": "teacher"}
VARIANTS["defaults, heads at learning rate 1e-3 (not 1e-2)"] = {"head_lr": 1e-3}
VARIANTS["defaults, heads and the students' bias terms at learning rate 1e-3"] = {"head_lr": 1e-3, "lr": 1e-3}
VARIANTS["defaults, one step (the students nearly as they start)"] = {"steps": 1}
VARIANTS["defaults, one step at learning rate 1e-8 (the students as they start)"] = {"steps": 1, "lr": 1e-8, "head_lr": 1e-8}
VARIANTS["defaults, learning rates warmed up over 30% of the steps (not 6%)"] = {"warmup": 0.3}
VARIANTS["defaults, the students distil no propagated labels (only the teacher and their labels)"] = {"student_graph_weight": 0.0}
VARIANTS["defaults, the students distil nothing from the teacher (their labels and the propagated ones)"] = {"kd_weight": 0.0}
VARIANTS["defaults, a tenth of the pool (at most 1,000 texts) held out to keep each student as it starts or as trained"] = {
    "check_texts": 1000
}
VARIANTS["defaults, a student of four layers (0,1,4,5)"] = {"student_layers": [[0, 1, 4, 5]]}
VARIANTS["defaults, the teacher the mean of two contrastive phases (a model soup)"] = {"contrastive_soup": 2}
NO_SELECTION = "defaults, 20 labels per class and none held for selection (the same 20 per class seen)"
VARIANTS[NO_SELECTION] = {"labels_per_class": 20, "dev_per_class": 0}
# The last became the default (no labels held for selection): every variant before it held
# N per class (from the dev file, or out of train), which the teacher also learned.
for _name in [n for n in VARIANTS if n not in (NO_SELECTION, "defaults")]:
    VARIANTS[_name] = {"dev_per_class": None, **VARIANTS[_name]}
RENAMED = {  # names the first runs were recorded under
    "no-contrastive": "v1",
    "default": "v1 +contrastive +heads",
    "offline": "v1 +contrastive +heads, offline",
    "contrastive-20x4k": "v1 +contrastive(20 steps x 4k tokens) +heads",
    "offline-students-adapted": "v1 +contrastive +heads, offline, students adapted",
    "offline-adapted-nowarm": "... and no teacher warm-up",
    "offline-adapted-small-batches": "... and 1024-token batches (with warm-up)",
    "fast": "... no warm-up, 1 epoch, 1024 labeled tokens",
    "fast-min60": "... and at least 60 steps",
}


def tuning_dir(name: str, data: Path) -> Path:
    """The tuning directory of a set: train.jsonl (what runs draw from) and test.jsonl (the tuning set)."""
    out = TUNE_DIRS / name
    if (out / "train.jsonl").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    train_rows = (data / name / "train.jsonl").read_text().splitlines()
    if (data / name / "dev.jsonl").is_file():
        tune_rows = (data / name / "dev.jsonl").read_text().splitlines()
    else:
        labels = np.array([json.loads(r)["label"] for r in train_rows])
        rng = np.random.default_rng(12345)
        held = {int(i) for c in sorted(set(labels)) for i in rng.permutation(np.flatnonzero(labels == c))[:HOLD_OUT_PER_CLASS]}
        tune_rows = [r for i, r in enumerate(train_rows) if i in held]
        train_rows = [r for i, r in enumerate(train_rows) if i not in held]
    atomic_write_text(out / "test.jsonl", "\n".join(tune_rows) + "\n")
    atomic_write_text(out / "train.jsonl", "\n".join(train_rows) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,hwu64,yahoo_answers")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--variants", default="defaults", help="variant names separated by ';' (see --list)")
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--list", action="store_true", help="print the variants and exit")
    args = ap.parse_args()
    if args.list:
        for name, overrides in VARIANTS.items():
            print(f"{name}: {overrides or 'the defaults'}")
        return
    variants = [v.strip() for v in args.variants.split(";")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {'; '.join(unknown)} (known: {'; '.join(VARIANTS)})")
    results = _runs()
    for name in args.sets.split(","):
        data_dir = tuning_dir(name, args.data)
        for seed in map(int, args.seeds.split(",")):
            for variant in variants:
                key = (name, variant, seed)
                if not args.redo and any((r["set"], r["variant"], r["seed"]) == key for r in results):
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    settings = dict(data=str(data_dir), out=tmp, labels_per_class=args.labels_per_class, seed=seed, threads=args.threads)
                    report = train(TrainArgs(**{**settings, **VARIANTS[variant]}), progress=False)
                results = _record(summarise_run(name, variant, seed, report))
                r = results[-1]
                print(
                    f"{name} seed {seed} {variant}: student {r['student_tune_dev']:.1f}, teacher {r['teacher_tune_dev']:.1f} "
                    f"in {r['seconds']:.0f}s",
                    flush=True,
                )
    print(markdown(results))


def summarise_run(name: str, variant: str, seed: int, report: dict) -> dict:
    chosen = report["students"][report["chosen_student"]]
    settings = dict(report["settings"], data=portable(report["settings"]["data"]), out="(temporary directory)")
    return {
        "set": name,
        "variant": variant,
        "seed": seed,
        "student_tune_dev": round(100 * chosen["test"]["accuracy"], 2),
        "teacher_tune_dev": round(100 * report["teacher"]["test"]["accuracy"], 2),
        "student_run_dev": None if chosen["dev"]["accuracy"] is None else round(100 * chosen["dev"]["accuracy"], 2),
        "seconds": report["training"]["seconds"],
        "steps": report["training"]["steps"],
        "phases": report["training"].get("phases"),
        "contrastive_steps_run": (report.get("contrastive") or {}).get("steps_run"),
        "peak_rss_mb": report["training"].get("peak_rss_mb"),
        "rss_mb_at_evaluations": [h.get("rss_mb") for h in report["history"]],
        "labeled_seen": report["data"]["labeled_seen"],
        "start_check": report.get("start_check"),
        "settings": settings,
    }


def _record(run: dict) -> list[dict]:
    key = (run["set"], run["variant"], run["seed"])
    results = [r for r in _runs() if (r["set"], r["variant"], r["seed"]) != key] + [run]
    atomic_write_text(OUT, json.dumps({"benchmark": "tuning", "runs": results}, indent=2) + "\n")
    return results


def _runs() -> list[dict]:
    runs = json.loads(OUT.read_text())["runs"] if OUT.is_file() else []
    return [{**r, "variant": RENAMED.get(r["variant"], r["variant"])} for r in runs]


def markdown(results: list[dict]) -> str:
    lines = ["| set | variant | seeds | student (tuning dev %) | teacher (tuning dev %) | train time (s) |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["set"], r["variant"]), []).append(r)
    order = list(VARIANTS)
    for (name, variant), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]) if kv[0][1] in order else len(order))
    ):
        student, teacher, seconds = (statistics.mean(r[k] for r in runs) for k in ("student_tune_dev", "teacher_tune_dev", "seconds"))
        lines.append(f"| {name} | {variant} | {len(runs)} | {student:.1f} | {teacher:.1f} | {seconds:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
