"""Which texts to label: nanonet select against random and stratified picks, seeds 1-3.

For each set and seed the pool is train without a fixed dev sample (10 per class, from the
dev file when there is one, else held out of train and out of the pool); every strategy
and budget is scored by a default `nanonet train --labeled PICKS --unlabeled POOL --dev DEV
--test TEST` on the same pool, dev and test. The person who labels is simulated with the
gold labels. Strategies, at budgets of 4 and 10 times the number of classes:
  - cold start: `nanonet select --pool POOL --budget B` (the teacher's k-means representatives)
  - random: B texts drawn uniformly from the pool (a user who labels whatever comes first)
  - stratified: B / classes per class (an oracle: it needs the labels to stratify)
and one next round from the cold start at 4x to 8x: `nanonet select --model RUN/student
--labeled PICKS` against 4x more random texts. Columns: test accuracy (mean, std) and
macro-F1 of the chosen student, class coverage (classes with at least one label), and
the wall seconds of `nanonet select` (process start, teacher load and embedding included).
`--timing` adds one cold-start pick of 40 from a 10,000-text pool, int8 then fp32 (ag_news and
yahoo_answers train texts).

    python bench/select_labels.py                                 # everything (long)
    python bench/select_labels.py --sets hwu64 --seeds 1          # one set, one seed
    python bench/select_labels.py --multiples 4 --no-next-round   # only the 4x budgets
    python bench/select_labels.py --timing --sets none            # only the 10,000-text timing

Results are merged run by run into bench/results/select.json (a rerun skips what is there;
--redo replaces); a markdown table is printed and docs/select.png drawn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NANONET_NO_PROGRESS", "1")

from nanonet.runtimes.fsutil import atomic_write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
OUT = HERE / "results" / "select.json"
PLOT = ROOT / "docs" / "select.png"
NANONET = Path(sys.executable).parent / "nanonet"
DEV_PER_CLASS = 10
STRATEGIES = ("cold start", "random", "stratified")
NEXT = ("cold start + next round", "cold start + random")
TIMING = {"int8": "timing|10000", "fp32": "timing|10000|fp32"}  # the default first


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


class Setup:
    """One set and seed: the pool (train less the dev sample), its gold labels, dev and test."""

    def __init__(self, name: str, seed: int, data: Path, work: Path):
        self.name, self.seed, self.work = name, seed, work
        train = read_jsonl(data / name / "train.jsonl")
        self.classes = sorted({r["label"] for r in train})
        rng = np.random.default_rng([seed, 5])
        dev_file = data / name / "dev.jsonl"
        source = read_jsonl(dev_file) if dev_file.is_file() else train
        dev_rows = sorted(
            i for c in self.classes for i in rng.permutation([j for j, r in enumerate(source) if r["label"] == c])[:DEV_PER_CLASS]
        )
        dev = [source[i] for i in dev_rows]
        held = set(dev_rows) if not dev_file.is_file() else set()
        self.pool = [r for i, r in enumerate(train) if i not in held]
        self.pool_file = write_jsonl(work / "pool.jsonl", [{"text": r["text"]} for r in self.pool])
        self.dev_file = write_jsonl(work / "dev.jsonl", dev)
        self.test_file = data / name / "test.jsonl"

    def labeled(self, rows: list[int], path: Path) -> Path:
        return write_jsonl(path, [{"text": self.pool[i]["text"], "label": self.pool[i]["label"], "pool_row": i + 1} for i in rows])

    def coverage(self, rows: list[int]) -> int:
        return len({self.pool[i]["label"] for i in rows})

    def random_rows(self, budget: int, exclude: set[int], salt: int) -> list[int]:
        order = np.random.default_rng([self.seed, budget, salt]).permutation(len(self.pool))
        return [int(i) for i in order if int(i) not in exclude][:budget]

    def stratified_rows(self, budget: int) -> list[int]:
        per = budget // len(self.classes)
        rng = np.random.default_rng([self.seed, budget, 3])
        return [int(i) for c in self.classes for i in rng.permutation([j for j, r in enumerate(self.pool) if r["label"] == c])[:per]]

    def select(self, budget: int, out: Path, model: Path | None = None, labeled: Path | None = None) -> tuple[list[int], float]:
        cmd = [str(NANONET), "select", "--pool", str(self.pool_file), "--budget", str(budget), "--seed", str(self.seed)]
        cmd += ["--out", str(out), "--threads", "2", "--json"]
        if model:
            cmd += ["--model", str(model)]
        if labeled:
            cmd += ["--labeled", str(labeled)]
        tic = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - tic
        if done.returncode:
            raise SystemExit(f"nanonet select failed: {done.stderr.strip()}")
        return [r["pool_row"] - 1 for r in read_jsonl(out)], seconds

    def train(self, labeled: Path, run: Path) -> dict:
        cmd = [str(NANONET), "train", "--labeled", str(labeled), "--unlabeled", str(self.pool_file), "--dev", str(self.dev_file)]
        cmd += ["--test", str(self.test_file), "--seed", str(self.seed), "--threads", "2", "--out", str(run), "--json"]
        tic = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"nanonet train failed: {done.stderr.strip()[-2000:]}")
        report = json.loads((run / "report.json").read_text())
        student = report["students"][report["chosen_student"]]
        return {
            "test_accuracy": student["test"]["accuracy"],
            "test_macro_f1": student["test"]["macro_f1"],
            "dev_accuracy": student["dev"]["accuracy"],
            "teacher_test_accuracy": report["teacher"]["test"]["accuracy"],
            "train_seconds": round(time.perf_counter() - tic, 1),
        }


def run_set(name: str, seed: int, args, results: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup = Setup(name, seed, args.data, work)
        k = len(setup.classes)

        def record(strategy: str, budget: int, rows: list[int], select_seconds: float | None, run: Path) -> None:
            key = f"{name}|{seed}|{strategy}|{budget}"
            labeled = setup.labeled(rows, work / f"labeled-{strategy.replace(' ', '_')}-{budget}.jsonl")
            row = {"set": name, "seed": seed, "strategy": strategy, "budget": budget, "labels": len(rows), "classes": k}
            row |= {"coverage": setup.coverage(rows), "select_seconds": round(select_seconds, 1) if select_seconds else None}
            row |= setup.train(labeled, run)
            results[key] = row
            save(results)
            print(
                f"{name} seed {seed} {strategy} {budget}: test {100 * row['test_accuracy']:.1f}, coverage {row['coverage']}/{k}", flush=True
            )

        def todo(strategy: str, budget: int) -> bool:
            return args.redo or f"{name}|{seed}|{strategy}|{budget}" not in results

        cold_rows = {}
        for mult in sorted({4, *args.multiples} if args.next_round else args.multiples):
            budget = mult * k
            picks = work / f"picks-{budget}.jsonl"
            rows, seconds = setup.select(budget, picks)
            cold_rows[budget] = (rows, picks)
            if mult not in args.multiples:
                continue
            if todo("cold start", budget):
                record("cold start", budget, rows, seconds, work / f"run-cold-{budget}")
            if todo("random", budget):
                record("random", budget, setup.random_rows(budget, set(), 1), None, work / f"run-random-{budget}")
            if todo("stratified", budget):
                record("stratified", budget, setup.stratified_rows(budget), None, work / f"run-strat-{budget}")
        budget = 4 * k
        if args.next_round and (todo(NEXT[0], 2 * budget) or todo(NEXT[1], 2 * budget)):
            rows, picks = cold_rows[budget]
            run = work / f"run-cold-{budget}"  # the cold start's run, which the next round asks
            if not (run / "student").is_dir():  # its row was measured before this process
                setup.train(setup.labeled(rows, work / "first.jsonl"), run)
            more, seconds = setup.select(budget, work / "next.jsonl", model=run / "student", labeled=picks)
            if todo(NEXT[0], 2 * budget):
                record(NEXT[0], 2 * budget, rows + more, seconds, work / "run-next")
            if todo(NEXT[1], 2 * budget):
                record(NEXT[1], 2 * budget, rows + setup.random_rows(budget, set(rows), 2), None, work / "run-next-random")


def timing(args, results: dict) -> None:
    """One cold-start pick of 40 from 10,000 texts (ag_news then yahoo_answers train), with
    the default int8 embedding and with fp32, one after the other."""
    texts = [r["text"] for n in ("ag_news", "yahoo_answers") for r in read_jsonl(args.data / n / "train.jsonl")][:10000]
    with tempfile.TemporaryDirectory() as tmp:
        pool = write_jsonl(Path(tmp) / "pool.jsonl", [{"text": t} for t in texts])
        for precision in ("int8", "fp32"):
            out = Path(tmp) / f"picks-{precision}.jsonl"
            cmd = [str(NANONET), "select", "--pool", str(pool), "--budget", "40", "--out", str(out), "--threads", "2"]
            cmd += ["--precision", precision, "--json"]
            tic = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - tic
            if done.returncode:
                raise SystemExit(f"nanonet select failed: {done.stderr.strip()}")
            summary = json.loads(done.stdout)
            results[TIMING[precision]] = {
                "pool_texts": len(texts),
                "budget": 40,
                "wall_seconds": round(seconds, 1),
                "select_seconds": summary["seconds"],
                "embedding_seconds": summary["embedding_seconds"],
                "precision": summary["precision"],
                "threads": 2,
            }
            save(results)
            print(f"10,000-text pool, {precision}: {seconds:.1f} s wall ({summary['embedding_seconds']} s embedding)", flush=True)


def save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(results, indent=1, sort_keys=True) + "\n")


def summarize(results: dict) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for key, row in results.items():
        if not key.startswith("timing"):
            groups.setdefault((row["set"], row["budget"], row["strategy"]), []).append(row)
    order = {s: i for i, s in enumerate(STRATEGIES + NEXT)}
    out = []
    for (name, budget, strategy), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
        acc = [100 * r["test_accuracy"] for r in rows]
        secs = [r["select_seconds"] for r in rows if r["select_seconds"] is not None]
        out.append(
            {
                "set": name,
                "budget": budget,
                "per_class": budget / rows[0]["classes"],
                "strategy": strategy,
                "seeds": sorted(r["seed"] for r in rows),
                "accuracy": statistics.mean(acc),
                "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "macro_f1": statistics.mean(100 * r["test_macro_f1"] for r in rows),
                "coverage": statistics.mean(r["coverage"] for r in rows),
                "classes": rows[0]["classes"],
                "select_seconds": statistics.median(secs) if secs else None,
            }
        )
    return out


def markdown(summary: list[dict], results: dict) -> str:
    lines = [
        "| set | labels | strategy | seeds | test accuracy | macro-F1 | classes covered | select s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        secs = f"{s['select_seconds']:.0f}" if s["select_seconds"] is not None else "-"
        lines.append(
            f"| {s['set']} | {s['budget']} ({s['per_class']:g} x classes) | {s['strategy']} | {','.join(map(str, s['seeds']))} "
            f"| {s['accuracy']:.1f} ± {s['std']:.1f} | {s['macro_f1']:.1f} | {s['coverage']:.1f} / {s['classes']} | {secs} |"
        )
    for key in TIMING.values():
        if key in results:
            t = results[key]
            lines.append(
                f"\n10,000-text pool, budget 40, {t['precision']}: {t['wall_seconds']:.0f} s wall,"
                f" of which {t['embedding_seconds']:.0f} s embedding (2 threads)."
            )
    return "\n".join(lines)


def plot(summary: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    sets = sorted({s["set"] for s in summary})
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        rows = [s for s in summary if s["set"] == name]
        for strategy, marker in zip(STRATEGIES + NEXT, "osD^v"):
            pts = sorted((s["budget"], s["accuracy"], s["std"]) for s in rows if s["strategy"] == strategy)
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, marker=marker, capsize=3, label=strategy, linestyle="-" if len(pts) > 1 else "none")
        ax.set_title(f"{name} ({rows[0]['classes']} classes)")
        ax.set_xlabel("labeled texts")
        ax.set_ylabel("test accuracy of the chosen student (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    print(f"wrote {PLOT.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,hwu64", help="comma-separated, or none")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--multiples", default="4,10", help="budgets as multiples of the number of classes")
    ap.add_argument("--no-next-round", dest="next_round", action="store_false", help="skip the next round from 4x to 8x")
    ap.add_argument("--timing", action="store_true", help="also time a pick from a 10,000-text pool")
    ap.add_argument("--redo", action="store_true")
    args = ap.parse_args()
    args.multiples = [int(m) for m in args.multiples.split(",") if m]
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in [s for s in args.sets.split(",") if s and s != "none"]:
            run_set(name, seed, args, results)
    if args.timing:
        timing(args, results)
    summary = summarize(results)
    print(markdown(summary, results))
    if summary:
        plot(summary)


if __name__ == "__main__":
    main()
