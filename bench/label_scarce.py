"""Label-scarce benchmark: N labels per class, seeds 1-3, nanonet against SetFit and model2vec.

Every row of a set and seed trains on the same labeled rows: nanonet's own draw
(nanonet.data.splits.label_scarce), written out for the peers, whose reported sha256 of
those rows is checked against nanonet's. Rows:
  - SetFit (all-MiniLM-L6-v2 body, the packaged copy), at SetFit's default training
    arguments, on the N labels per class; and, when nanonet's runs hold labels for model
    selection (--dev-per-class; none by default), on the same rows plus those ("training +
    selection rows"), so both see as many labels
  - model2vec: a static model distilled from the same body, plus logistic regression
  - the teacher, supervised only (all parameters), and the 0,2,4 student, supervised only (bias)
  - NanoNet (default settings): its chosen student, which ships, and its cohort's teacher;
    the student is exported and run by the nanonet runtime in fp32 and int8 for docs/s
Columns: test accuracy and macro-F1, dev accuracy (the run's own selection rows), training
wall seconds (one process at a time, --threads), inference docs/s over the test texts,
trainable parameters, peak resident memory, labeled examples seen.

    make bench-env                                               # SetFit and model2vec, once
    python bench/label_scarce.py                                 # everything (long)
    python bench/label_scarce.py --sets ag_news --seeds 1        # one seed of one set
    python bench/label_scarce.py --sets hwu64 --rows setfit,nanonet --labels-per-class 5

Results are merged run by run into bench/results/label_scarce.json (a rerun skips what is
there; --redo replaces; --fresh starts over) and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NANONET_NO_PROGRESS", "1")

from _paths import portable  # noqa: E402  (bench/_paths.py, beside this file)

from nanonet.data.splits import Splits, label_scarce, load_tables  # noqa: E402
from nanonet.runtimes.errors import NanonetError  # noqa: E402
from nanonet.runtimes.fsutil import atomic_write_text  # noqa: E402
from nanonet.train.args import SUPERVISED_ONLY  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
OUT = HERE / "results" / "label_scarce.json"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"

NANONET_ROWS = {
    "teacher, supervised only (all parameters)": dict(students=1, trainable="all", teacher_trainable="all", **SUPERVISED_ONLY),
    "student 0,2,4, supervised only (bias)": dict(students=1, student_layers=[[0, 2, 4]], **SUPERVISED_ONLY),
    "NanoNet chosen student (bias)": dict(),
}
# row: (peer, whether it also trains on nanonet's selection rows, extra bench/peers.py flags)
PEER_ROWS = {
    "SetFit (MiniLM-L6, all parameters)": ("setfit", False, []),
    # SetFit's default oversampling trains on every negative pair twice, so its steps grow with
    # the square of the labels (25,200 for hwu64's 640); 20 pairs of each kind per text is the
    # SetFit paper's setting, and takes 1,600 steps there
    "SetFit, 20 pairs of each kind per text": ("setfit", False, ["--num-iterations", "20"]),
    "SetFit on training + selection rows": ("setfit", True, []),
    "model2vec static + logistic regression": ("model2vec", False, []),
}
DERIVED = ("NanoNet cohort teacher", "NanoNet chosen student, int8")  # rows measured within the NanoNet run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,hwu64,yahoo_answers")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--labels-per-class", type=int, default=10)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--supervised-steps", type=int, default=100, help="steps of the supervised-only rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="start a new results file")
    ap.add_argument("--redo", action="store_true", help="run the selected sets, seeds and rows again, replacing their results")
    ap.add_argument("--rows", default=None, help="only rows whose name holds one of these words (comma-separated), e.g. setfit,nanonet")
    ap.add_argument(
        "--keep", type=Path, default=None, help="keep each nanonet run's directory under KEEP/SET-seedS-rowI (-nN- for N other than 10)"
    )
    ap.add_argument("--resume", action="store_true", help="with --keep: continue a stopped nanonet run from its saved state")
    ap.add_argument("--bench-python", type=Path, default=BENCH_PYTHON, help="python of the peers' environment (make bench-env)")
    args = ap.parse_args()

    if args.fresh:
        _write([])
    wanted = [w.strip().lower() for w in args.rows.split(",")] if args.rows else []
    rows = [r for r in [*NANONET_ROWS, *PEER_ROWS] if not wanted or any(w in r.lower() for w in wanted)]
    if any(r in PEER_ROWS for r in rows) and not args.bench_python.is_file():
        raise SystemExit(f"--bench-python: {args.bench_python} not found; run `make bench-env` first, or leave out the peer rows (--rows)")
    n = args.labels_per_class
    for name in args.sets.split(","):
        for seed in map(int, args.seeds.split(",")):
            splits = label_scarce(load_tables(str(args.data / name)), n, seed)
            for row in rows:
                if not args.redo and _done(name, row, seed, n):
                    continue
                if row in PEER_ROWS and PEER_ROWS[row][1] and not splits.dev_texts:
                    continue  # nanonet holds no selection rows: the plain row has the same labels
                if row in NANONET_ROWS:
                    runs = nanonet_runs(name, row, seed, splits, args)
                else:
                    runs = [peer_run(name, row, seed, splits, args)]
                for run in runs:
                    _record(run)
                    acc = f"test {100 * run['test_accuracy']:.1f}%"
                    print(f"{name} seed {seed} n={n} {run['row']}: {acc} in {run['seconds'] or 0:.0f}s", flush=True)
    print(markdown(_runs()))
    print(phases_markdown(_runs()))


# ---- the labeled rows, as nanonet draws them and the peers receive them ----------------------


def peer_rows(splits: Splits, with_selection: bool = False) -> list[dict]:
    """The labeled rows of nanonet's draw as JSON rows with class names, in draw order; with
    `with_selection` followed by the rows nanonet uses for model selection."""
    rows = [{"text": t, "label": splits.labels[i]} for t, i in zip(splits.labeled_texts, splits.labeled_ids)]
    if with_selection:
        rows += [{"text": t, "label": splits.labels[i]} for t, i in zip(splits.dev_texts, splits.dev_ids)]
    return rows


def rows_sha256(rows: list[dict]) -> str:
    """sha256 over text NUL label NUL of each row, as bench/peers.py reports it."""
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r['text']}\0{r['label']}\0".encode())
    return h.hexdigest()


def run_digest(splits: Splits) -> str:
    """The digest a nanonet report gives its labeled rows (text NUL class id NUL), recomputed here."""
    h = hashlib.sha256()
    for t, i in zip(splits.labeled_texts, splits.labeled_ids):
        h.update(t.encode() + f"\0{i}\0".encode())
    return h.hexdigest()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


# ---- nanonet rows -----------------------------------------------------------------------------


def nanonet_runs(name: str, row: str, seed: int, splits: Splits, args) -> list[dict]:
    """One nanonet training run; the NanoNet row also yields its cohort teacher and the int8 student."""
    from nanonet.train import TrainArgs, train

    overrides = NANONET_ROWS[row]
    index = list(NANONET_ROWS).index(row)
    with tempfile.TemporaryDirectory() as tmp:
        n = "" if args.labels_per_class == 10 else f"-n{args.labels_per_class}"
        out = args.keep / f"{name}-seed{seed}{n}-row{index}" if args.keep else Path(tmp) / "run"
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
        rows_sent = peer_rows(splits)
        if report["data"]["labeled_sha256"] != run_digest(splits):
            raise SystemExit(f"{name} seed {seed} {row}: the run trained on other labeled rows than the benchmark drew for the peers")
        common = {
            "set": name,
            "seed": seed,
            "labels_per_class": args.labels_per_class,
            "labeled_sha256": rows_sha256(rows_sent),
            "labeled_seen": report["data"]["labeled_seen"],
            "seconds": report["training"]["seconds"],
            "steps": report["training"]["steps"],
            "phases": report["training"].get("phases"),
            "peak_rss_mb": report["training"].get("peak_rss_mb"),
            "settings": portable_settings(report["settings"], args.keep),
        }
        chosen = report["students"][report["chosen_student"]]
        member = report["teacher"] if row.startswith("teacher") else chosen
        ckpt = out / ("teacher" if row.startswith("teacher") else "student")
        speed = shipped_speed(ckpt, args.data / name, splits, args.threads, int8=row.startswith("NanoNet"))
        runs = [{**common, "row": row, **figures(member), "docs_per_second": speed["fp32"]["docs_per_second"]}]
        if row.startswith("NanoNet"):
            teacher = figures(report["teacher"])
            if report.get("contrastive"):  # its contrastive phase trained every encoder weight, its head after
                teacher["trainable_parameters"] = report["contrastive"]["trained_parameters"] + report["teacher"]["trainable_parameters"]
            runs.append({**common, "row": DERIVED[0], **teacher, "docs_per_second": None})
            int8 = speed["int8"]
            runs.append(
                {
                    **common,
                    "row": DERIVED[1],
                    **figures(chosen),
                    "test_accuracy": int8["test_accuracy"],
                    "test_macro_f1": None,
                    "dev_accuracy": None,
                    "docs_per_second": int8["docs_per_second"],
                }
            )
        return runs


def figures(member: dict) -> dict:
    return {
        "test_accuracy": member["test"]["accuracy"],
        "test_macro_f1": member["test"]["macro_f1"],
        "dev_accuracy": member["dev"]["accuracy"],
        "trainable_parameters": member["trainable_parameters"],
        "layers": member["layers"],
    }


def shipped_speed(checkpoint: Path, data: Path, splits: Splits, threads: int, int8: bool) -> dict:
    """The checkpoint exported to a bundle and run by the nanonet runtime on the test texts:
    docs/s (median of 3 timed passes after a warm-up); with `int8` also the int8 bundle that
    `nanonet quantize` makes by default (calibration text: the train file's), its docs/s and
    test accuracy."""
    from nanonet.calibrate.quantize import quantize_bundle
    from nanonet.export.bundle import export_bundle

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32"
        export_bundle(checkpoint, fp32)
        out["fp32"] = {"docs_per_second": docs_per_second(fp32, splits.test_texts, threads)}
        if int8:
            q = Path(tmp) / "int8"
            quantize_bundle(fp32, q, calib=data / "train.jsonl", say=lambda _: None)  # the default method
            out["int8"] = {
                "docs_per_second": docs_per_second(q, splits.test_texts, threads),
                "test_accuracy": bundle_accuracy(q, splits, threads),
            }
    return out


def docs_per_second(bundle: Path, texts: list[str], threads: int) -> float:
    from nanonet.runtimes import load

    clf = load(bundle, threads=threads)
    clf.predict_proba(texts[:64])
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        clf.predict_proba(texts)
        times.append(time.perf_counter() - tic)
    return round(len(texts) / statistics.median(times), 1)


def bundle_accuracy(bundle: Path, splits: Splits, threads: int) -> float:
    from nanonet.runtimes import load

    clf = load(bundle, threads=threads)
    preds = clf.predict(splits.test_texts)
    return sum(p.label == splits.labels[i] for p, i in zip(preds, splits.test_ids)) / len(splits.test_ids)


# ---- peer rows --------------------------------------------------------------------------------


def peer_run(name: str, row: str, seed: int, splits: Splits, args) -> dict:
    """One peer run in the benchmark environment, on nanonet's labeled rows for this seed."""
    peer, with_selection, flags = PEER_ROWS[row]
    rows = peer_rows(splits, with_selection)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        labeled = write_jsonl(t / "labeled.jsonl", rows)
        test = write_jsonl(t / "test.jsonl", [{"text": x, "label": splits.labels[i]} for x, i in zip(splits.test_texts, splits.test_ids)])
        cmd = [str(args.bench_python), str(HERE / "peers.py"), "--peer", peer, "--train", str(labeled), "--test", str(test)]
        if not with_selection and splits.dev_texts:  # scored on nanonet's selection rows, when it holds any
            dev = write_jsonl(t / "dev.jsonl", [{"text": x, "label": splits.labels[i]} for x, i in zip(splits.dev_texts, splits.dev_ids)])
            cmd += ["--dev", str(dev)]
        cmd += [*flags, "--threads", str(args.threads), "--seed", str(seed), "--out", str(t / "result.json")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} seed {seed} {row}: {peer} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        result = json.loads((t / "result.json").read_text())
    if result["labeled"]["sha256"] != rows_sha256(rows):
        raise SystemExit(f"{name} seed {seed} {row}: the peer trained on other rows than nanonet's draw")
    return {
        "set": name,
        "row": row,
        "seed": seed,
        "labels_per_class": args.labels_per_class,
        "labeled_sha256": result["labeled"]["sha256"],
        "labeled_seen": len(rows),  # SetFit and model2vec select nothing on held-out labels
        "test_accuracy": result["test_accuracy"],
        "test_macro_f1": result["test_macro_f1"],
        "dev_accuracy": result["dev_accuracy"],
        "seconds": result["train_seconds"],
        "docs_per_second": result["docs_per_second"],
        "trainable_parameters": result["trainable_parameters"],
        "peak_rss_mb": result.get("peak_rss_mib_before_classifier") or result["peak_rss_mib"],
        "peer": {k: result[k] for k in ("peer", "peer_version", "versions", "settings", "body")},
        "static_model_for_classification": result.get("static_model_for_classification"),
    }


# ---- the results file -------------------------------------------------------------------------


def portable_settings(settings: dict, keep: Path | None) -> dict:
    """The run's settings with its paths as a results file names them (bench/_paths.py)."""
    s = dict(settings, data=portable(settings["data"]), unlabeled=[portable(u) for u in settings.get("unlabeled") or []])
    s["out"] = portable(settings["out"], hashed=False) if keep else "(temporary directory)"
    if Path(str(settings.get("teacher", ""))).expanduser().exists():
        s["teacher"] = portable(settings["teacher"])
    return s


def _key(r: dict) -> tuple:
    return r["set"], r["row"], r["seed"], r.get("labels_per_class", 10)


def _done(name: str, row: str, seed: int, n: int) -> bool:
    return any(_key(r) == (name, row, seed, n) for r in _runs())


def _record(run: dict) -> None:
    """Merge one finished run into the results file as it is now."""
    _write([r for r in _runs() if _key(r) != _key(run)] + [run])


def _runs() -> list[dict]:
    return json.loads(OUT.read_text())["runs"] if OUT.is_file() else []


SET_ORDER = ("ag_news", "hwu64", "yahoo_answers")
ROW_ORDER = (*PEER_ROWS, *NANONET_ROWS, *DERIVED)


def _order(r: dict) -> tuple:
    """Runs by set, N, row (peers, the supervised rows, NanoNet's) and seed, as the tables read."""
    where = SET_ORDER.index(r["set"]) if r["set"] in SET_ORDER else len(SET_ORDER)
    row = ROW_ORDER.index(r["row"]) if r["row"] in ROW_ORDER else len(ROW_ORDER)
    return where, r["set"], r.get("labels_per_class", 10), row, r["seed"]


def _write(results: list[dict]) -> None:
    results = sorted(results, key=_order)
    atomic_write_text(OUT, json.dumps({"benchmark": "label_scarce", "runs": results, "summary": summarise(results)}, indent=2) + "\n")


def summarise(results: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["set"], r.get("labels_per_class", 10), r["row"]), []).append(r)
    summary = []
    for (name, n, row), runs in groups.items():
        acc = [100 * r["test_accuracy"] for r in runs]
        summary.append(
            {
                "set": name,
                "labels_per_class": n,
                "row": row,
                "seeds": [r["seed"] for r in runs],
                "accuracies": [round(a, 2) for a in acc],
                "mean": round(statistics.mean(acc), 2),
                "std": round(statistics.stdev(acc), 2) if len(acc) > 1 else 0.0,
                "macro_f1": _mean(runs, "test_macro_f1", 100),
                "dev": _mean(runs, "dev_accuracy", 100),
                "trainable_parameters": runs[0]["trainable_parameters"],
                "mean_seconds": _mean(runs, "seconds"),
                "docs_per_second": _mean(runs, "docs_per_second"),
                "peak_rss_mb": _mean(runs, "peak_rss_mb"),
                "labeled_seen": runs[0].get("labeled_seen"),
            }
        )
    return summary


def _mean(runs: list[dict], key: str, scale: float = 1.0) -> float | None:
    """The mean of a figure over the seeds, or None where a run lacks it."""
    values = [r.get(key) for r in runs]
    return None if any(v is None for v in values) else round(scale * statistics.mean(values), 2)


def markdown(results: list[dict]) -> str:
    def cell(v, fmt="{:,.0f}"):
        return "-" if v is None else fmt.format(v)

    lines = [
        "| set | N | model | test acc (%) | macro-F1 | dev acc | seeds | labels seen | trainable params | train s | docs/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarise(results):
        lines.append(
            f"| {s['set']} | {s['labels_per_class']} | {s['row']} | {s['mean']:.1f} ± {s['std']:.1f} | {cell(s['macro_f1'], '{:.1f}')} | "
            f"{cell(s['dev'], '{:.1f}')} | {len(s['seeds'])} | {cell(s['labeled_seen'])} | {s['trainable_parameters']:,} | "
            f"{cell(s['mean_seconds'])} | {cell(s['docs_per_second'])} | {cell(s['peak_rss_mb'])} |"
        )
    return "\n".join(lines)


PHASES = ("data", "contrastive", "heads", "propagation", "cache", "steps", "dev")  # the training seconds; test is apart


def phases_markdown(results: list[dict]) -> str:
    """Where each default NanoNet run's training time went: seconds per phase (test, run
    after training, apart), the number of steps, and the peak resident memory."""
    lines = [
        "| set | seed | " + " | ".join(f"{k} s" for k in PHASES) + " | training s | optimizer steps | test s | peak MB |",
        "|---|---|" + "---|" * len(PHASES) + "---|---|---|---|",
    ]
    runs = [r for r in results if r["row"] == "NanoNet chosen student (bias)" and r.get("phases")]
    for r in sorted(runs, key=lambda r: (r["set"], r["labels_per_class"], r["seed"])):
        ph = r["phases"]
        cells = " | ".join(f"{ph.get(k, 0):,.0f}" for k in PHASES)
        lines.append(
            f"| {r['set']} | {r['seed']} | {cells} | {r['seconds']:,.0f} | {r['steps']} | {ph.get('test', 0):,.0f} | {r['peak_rss_mb']:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except NanonetError as e:  # e.g. a class with fewer training rows than --labels-per-class
        raise SystemExit(f"error: {e}") from None
