"""Label-scarce benchmark: N labels per class, seeds 1-3, on ag_news and yahoo_answers.

Rows, each as test accuracy mean +- std over the seeds, trainable parameters and time:
  - the teacher (all-MiniLM-L6-v2 + head), supervised only, all parameters trained
  - the student of layers 0,2,4, supervised only, bias terms + head trained
  - the NanoNet cohort's chosen student (bias-only), default settings

    python bench/label_scarce.py                                  # everything (long)
    python bench/label_scarce.py --sets ag_news --seeds 1         # one run of each row

Results are appended run by run to bench/results/label_scarce.json (a rerun skips what
is there; --fresh starts over) and a markdown table is printed (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("NANONET_NO_PROGRESS", "1")

from _paths import portable  # noqa: E402  (bench/_paths.py, beside this file)

from nanonet.runtimes.fsutil import atomic_write_text  # noqa: E402
from nanonet.train import TrainArgs, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "label_scarce.json"

SUPERVISED = dict(
    kd_weight=0.0, mutual_weight=0.0, self_train_weight=0.0, graph_weight=0.0, student_graph_weight=0.0, teacher_warmup_steps=0
)
ROWS = {
    "teacher, supervised only (all parameters)": dict(students=1, trainable="all", teacher_trainable="all", **SUPERVISED),
    "student 0,2,4, supervised only (bias)": dict(students=1, student_layers=[[0, 2, 4]], **SUPERVISED),
    "NanoNet chosen student (bias)": dict(),
}


def pick(row: str, report: dict) -> dict:
    member = report["teacher"] if row.startswith("teacher") else report["students"][report["chosen_student"]]
    return {
        "test_accuracy": member["test"]["accuracy"],
        "test_macro_f1": member["test"]["macro_f1"],
        "trainable_parameters": member["trainable_parameters"],
        "layers": member["layers"],
        "seconds": report["training"]["seconds"],
        "steps": report["training"]["steps"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,yahoo_answers")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--supervised-steps", type=int, default=100, help="steps of the supervised-only rows")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fresh", action="store_true", help="start a new results file")
    ap.add_argument("--redo", action="store_true", help="run the selected sets, seeds and rows again, replacing their results")
    ap.add_argument("--rows", default=None, help="only these rows, by a word of their name (teacher, student, nanonet), comma-separated")
    ap.add_argument("--keep", type=Path, default=None, help="keep each run's directory under KEEP/SET-seedS-ROW (default: a temporary one)")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="with --keep: continue a stopped run from its last saved state (its time so far is carried over) instead of starting it again",
    )
    args = ap.parse_args()

    if args.fresh:
        _write([])
    results = _runs()
    done = {(r["set"], r["row"], r["seed"]) for r in results}
    wanted = [w.strip().lower() for w in args.rows.split(",")] if args.rows else []
    sets, seeds = args.sets.split(","), list(map(int, args.seeds.split(",")))
    selected = lambda name, row, seed: name in sets and seed in seeds and (not wanted or any(w in row.lower() for w in wanted))  # noqa: E731
    if args.redo:
        done = set()  # each old result is replaced when its rerun ends, so a stopped rerun loses nothing
    for name in sets:
        for seed in seeds:
            for i, (row, overrides) in enumerate(ROWS.items()):
                if (name, row, seed) in done or not selected(name, row, seed):
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    out = args.keep / f"{name}-seed{seed}-row{i}" if args.keep else tmp
                    resume = args.resume and args.keep is not None and (out / "state").is_dir()
                    if args.keep and out.exists() and not resume:
                        shutil.rmtree(out)  # this benchmark's own earlier run of the row
                    settings = dict(
                        data=str(args.data / name),
                        out=str(out),
                        labels_per_class=args.labels_per_class,
                        seed=seed,
                        threads=args.threads,
                        resume=resume,
                        **overrides,
                    )
                    if "kd_weight" in overrides:
                        settings["steps"] = args.supervised_steps
                    report = train(TrainArgs(**settings), progress=False)
                run = {
                    "set": name,
                    "row": row,
                    "seed": seed,
                    **pick(row, report),
                    "settings": portable_settings(report["settings"], args.keep),
                }
                print(f"{name} seed {seed} {row}: test {100 * run['test_accuracy']:.1f}% in {run['seconds']:.0f}s", flush=True)
                results = _record(run)
    print(markdown(results))


def portable_settings(settings: dict, keep: Path | None) -> dict:
    """The run's settings with its paths as a results file names them (bench/_paths.py): the
    data by name and content hash, a kept run directory by name, a temporary one as such."""
    s = dict(settings, data=portable(settings["data"]), unlabeled=[portable(u) for u in settings.get("unlabeled") or []])
    s["out"] = portable(settings["out"], hashed=False) if keep else "(temporary directory)"
    if Path(str(settings.get("teacher", ""))).expanduser().exists():
        s["teacher"] = portable(settings["teacher"])
    return s


def _record(run: dict) -> list[dict]:
    """Merge one finished run into the results file as it is now, so that benchmark processes
    filling different seeds or sets at the same time keep each other's rows."""
    key = (run["set"], run["row"], run["seed"])
    results = [r for r in _runs() if (r["set"], r["row"], r["seed"]) != key] + [run]
    _write(results)
    return results


def _runs() -> list[dict]:
    return json.loads(OUT.read_text())["runs"] if OUT.is_file() else []


def _write(results: list[dict]) -> None:
    atomic_write_text(OUT, json.dumps({"benchmark": "label_scarce", "runs": results, "summary": summarise(results)}, indent=2) + "\n")


def summarise(results: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["set"], r["row"]), []).append(r)
    summary = []
    for (name, row), runs in groups.items():
        acc = [100 * r["test_accuracy"] for r in runs]
        summary.append(
            {
                "set": name,
                "row": row,
                "seeds": [r["seed"] for r in runs],
                "accuracies": [round(a, 2) for a in acc],
                "mean": round(statistics.mean(acc), 2),
                "std": round(statistics.stdev(acc), 2) if len(acc) > 1 else 0.0,
                "trainable_parameters": runs[0]["trainable_parameters"],
                "mean_seconds": round(statistics.mean(r["seconds"] for r in runs), 1),
            }
        )
    return summary


def markdown(results: list[dict]) -> str:
    lines = ["| set | model | test accuracy (%) | seeds | trainable params | train time (s) |", "|---|---|---|---|---|---|"]
    for s in summarise(results):
        lines.append(
            f"| {s['set']} | {s['row']} | {s['mean']:.1f} ± {s['std']:.1f} | {len(s['seeds'])} | "
            f"{s['trainable_parameters']:,} | {s['mean_seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
