"""Quantization, one run per data set: what each int8 variant costs and buys.

For a trained student checkpoint per set (ag_news, yahoo_answers), exported to an fp32
bundle, rows:

- fp32: the exported bundle
- dynamic: `nanonet quantize` without calibration (int8 weights, activations at run time)
- static minmax / percentile / entropy: calibrated on 512 unlabeled texts (from dev where
  the set has a dev file, else from train), all weight matrix multiplications int8
  (mixed precision off)
- dynamic + smoothing: with calibration text, activation range moved into the weights
  (SmoothQuant, alpha 0.75, `--smooth 0.75`) before dynamic int8; mixed precision off
- dynamic + outlier split: with calibration text, the input channels whose range exceeds
  6x the median channel's multiplied apart in float (`--outliers always`); guard off
- default (--calib): `nanonet quantize --calib FILE` as it ships: dynamic; when
  agreement on the held-out half of the calibration texts is below 99%, the outlier
  split, then float layers until it is reached
- dynamic / default with 7-bit weights (`--weight-bits 7`): weights limited to [-64, 64],
  for x86 CPUs without VNNI (see calibrate/quantize.py)
- optimum preset: optimum's ORTQuantizer with the dynamic AutoQuantizationConfig preset for
  this CPU (avx512_vnni or avx2) on the same ONNX file (run in .venv-bench: make bench-env).
  As shipped, the preset also quantizes the Attention op and writes a graph ONNX Runtime
  refuses to load; the row uses the preset's operator list without Attention

Columns: test accuracy, agreement with fp32 (test texts), documents per second at batch 32
through the runtime (2 threads), model.onnx size. Speed is timed after all bundles of a set
are built, in rounds: each round runs every bundle once over the same 512 test texts
(order reversed every other round), so fp32 and each variant are timed minutes apart at
most and under the same machine load; the table gives each bundle's median documents per
second and the median of its per-round ratios to fp32.

    python bench/quantization.py --student ag_news=RUN_AG/student --student yahoo_answers=RUN_YA/student

Prints a table, writes bench/results/quantization.json and bench/results/quantization.md
(`--results FILE.json` for another machine type: int8 speed and, without VNNI, int8
numerics depend on the CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = "default (--calib): dynamic + agreement guard"

OPTIMUM_CODE = r"""
import sys
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
src, out, isa = sys.argv[1:4]
# the preset's operator list minus Attention: quantizing ONNX's opset-23 Attention gives a
# com.microsoft QAttention node that ONNX Runtime rejects (unknown attribute is_causal)
ops = [o for o in ["MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"] if o != "Attention"]
config = getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=False, operators_to_quantize=ops)
ORTQuantizer.from_pretrained(src, file_name="model.onnx").quantize(save_dir=out, quantization_config=config)
"""


def cpu_isa() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def optimum_bundle(fp32: Path, out: Path, python: str, isa: str) -> None:
    """optimum's dynamic preset on the bundle's model.onnx, repackaged as a bundle."""
    from nanonet.runtimes.bundle import Manifest, read_bundle, write_bundle

    src = read_bundle(fp32)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(src.file("model.onnx"), Path(tmp) / "model.onnx")
        done = subprocess.run([python, "-c", OPTIMUM_CODE, tmp, str(Path(tmp) / "q"), isa], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"optimum quantizer failed:\n{done.stderr[-2000:]}")
        produced = next((Path(tmp) / "q").glob("*.onnx"))
        manifest = Manifest(**{**src.manifest.__dict__, "precision": f"int8-optimum-{isa}"})
        manifest.quantization = {
            "method": f"optimum AutoQuantizationConfig.{isa}(is_static=False, per_channel=False), Attention not quantized"
        }
        write_bundle(out, manifest, {"model.onnx": produced, "tokenizer.json": src.file("tokenizer.json")})


def student_set(spec: str, data: Path, limit: int) -> tuple[str, str, list[dict], Path, str]:
    """SET=CHECKPOINT -> the set's name, the checkpoint, its first `limit` test rows, the
    calibration file and the sha256 of the student's weights."""
    name, ckpt = spec.split("=", 1)
    rows = [json.loads(line) for line in (data / name / "test.jsonl").read_text().splitlines()[:limit]]
    # calibration text the student never trained on where the set has some (dev): the
    # agreement check is optimistic on its own training pool (measured on yahoo_answers)
    calib = next(p for p in (data / name / "dev.jsonl", data / name / "train.jsonl") if p.is_file())
    return name, ckpt, rows, calib, hashlib.sha256((Path(ckpt) / "model.safetensors").read_bytes()).hexdigest()


def measure(bundle: Path, texts: list[str], gold: np.ndarray | None, ref: np.ndarray | None, threads: int) -> dict:
    """Accuracy and agreement with fp32 (`ref`) on all test texts, at batch 32."""
    from nanonet import runtimes

    clf = runtimes.load(bundle, threads=threads)
    probs = clf.predict_proba(texts, 32)
    pred = probs.argmax(-1)
    return {
        "accuracy": None if gold is None else float(np.mean(pred == gold)),
        "agreement": None if ref is None else float(np.mean(pred == ref.argmax(-1))),
        "model_mb": clf.bundle.manifest.files["model.onnx"]["bytes"] / 1e6,
        "precision": clf.bundle.manifest.precision,
        "probs": probs,
    }


def time_rounds(bundles: dict[str, Path], texts: list[str], threads: int, rounds: int) -> dict[str, dict]:
    """Documents per second at batch 32 of every bundle over the same texts, interleaved:
    each round runs each bundle once (the order reversed every other round). Per bundle:
    the median speed and the median of its per-round ratios to the first bundle (fp32)."""
    from nanonet import runtimes

    clfs = {label: runtimes.load(path, threads=threads) for label, path in bundles.items()}
    for clf in clfs.values():
        clf.predict_proba(texts[:32], 32)  # warm-up: session and thread-pool start
    speeds: dict[str, list[float]] = {label: [] for label in clfs}
    for r in range(rounds):
        for label in list(clfs)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            clfs[label].predict_proba(texts, 32)
            speeds[label].append(len(texts) / (time.perf_counter() - t0))
    base = speeds[next(iter(clfs))]
    return {
        label: {"docs_per_second": float(np.median(s)), "speed_vs_fp32": float(np.median(np.divide(s, base))), "rounds": len(s)}
        for label, s in speeds.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", action="append", required=True, help="SET=CHECKPOINT (repeat per set)")
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=2000, help="test texts per set")
    ap.add_argument("--time-texts", type=int, default=512, help="test texts per timing round")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (each runs every bundle once)")
    ap.add_argument("--only", default=None, help="comma-separated variants to run (default: all)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "quantization.json",
        help="the JSON to write (a .md table beside it); one file per machine type: rows keep only their own",
    )
    ap.add_argument("--optimum-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    args = ap.parse_args()

    from _paths import portable  # bench/_paths.py, beside this file
    from rich.console import Console

    from nanonet.calibrate.quantize import quantize_bundle
    from nanonet.export.bundle import export_bundle
    from nanonet.runtimes.errors import NanonetError

    console = Console(width=150)
    isa = cpu_isa()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nanonet-qbench-") as tmp:
        work = Path(tmp)
        for spec in args.student:
            name, ckpt, rows_in, calib, weights_digest = student_set(spec, args.data, args.limit)
            texts = [r["text"] for r in rows_in]
            with console.status(f"{name}: export"):
                export_bundle(ckpt, work / name / "fp32")
            labels = json.loads((work / name / "fp32" / "manifest.json").read_text())["labels"]
            gold = np.array([labels.index(str(r["label"])) for r in rows_in])
            variants = {
                "dynamic": dict(calib=None, method="dynamic"),
                "static minmax": dict(calib=calib, method="static", calibrator="minmax", min_agreement=1e-9),
                "static percentile": dict(calib=calib, method="static", calibrator="percentile", min_agreement=1e-9),
                "static entropy": dict(calib=calib, method="static", calibrator="entropy", min_agreement=1e-9),
                "dynamic + smoothing (--calib --smooth 0.75; guard off)": dict(calib=calib, min_agreement=1e-9, smooth=0.75),
                "dynamic + outlier split (--calib --outliers always; guard off)": dict(calib=calib, min_agreement=1e-9, outliers="always"),
                DEFAULT: dict(calib=calib),
                "dynamic 7-bit weights (--weight-bits 7)": dict(calib=None, method="dynamic", weight_bits=7),
                "default 7-bit weights (--calib --weight-bits 7)": dict(calib=calib, weight_bits=7),
            }
            known = {"fp32", *variants}  # rows of variants since renamed or dropped are not kept
            if args.only:
                unknown = set(args.only.split(",")) - set(variants)
                if unknown:
                    raise SystemExit(f"--only: unknown variants {sorted(unknown)}; known: {sorted(variants)}")
                variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
            q_seconds = {}
            for label, kw in variants.items():
                with console.status(f"{name}: {label}"):
                    t0 = time.perf_counter()
                    try:
                        quantize_bundle(
                            work / name / "fp32", work / name / label, samples=args.samples, threads=args.threads, say=lambda m: None, **kw
                        )
                    except NanonetError as e:  # e.g. an agreement the guard cannot reach: the other rows still count
                        console.print(f"{name} {label}: no bundle ({e})")
                        continue
                    q_seconds[label] = time.perf_counter() - t0
            if Path(args.optimum_python).is_file():
                with console.status(f"{name}: optimum {isa}"):
                    optimum_bundle(work / name / "fp32", work / name / f"optimum {isa}", args.optimum_python, isa)
            ref, built = None, {}
            for label in ["fp32", *variants, f"optimum {isa}"]:
                path = work / name / label
                if not path.is_dir():
                    continue
                with console.status(f"{name}: measuring {label}"):
                    r = measure(path, texts, gold, ref, args.threads)
                if label == "fp32":
                    ref = r["probs"]
                    r["agreement"] = 1.0
                q = json.loads((path / "manifest.json").read_text()).get("quantization", {})
                built[label] = path
                rows.append(
                    {
                        "set": name,
                        "variant": label,
                        "student": portable(ckpt, digest=weights_digest),
                        "student_sha256": weights_digest,
                        "n": len(texts),
                        "kept_float": q.get("kept_float"),
                        "quantize_seconds": q_seconds.get(label),
                        **{k: v for k, v in r.items() if k != "probs"},
                    }
                )
                console.print(
                    f"{name} {label}: acc {rows[-1]['accuracy']:.4f} agree {rows[-1]['agreement']:.4f} {rows[-1]['model_mb']:.1f} MB"
                )
            with console.status(f"{name}: timing {len(built)} bundles, {args.rounds} rounds of {args.time_texts} texts"):
                timing = time_rounds(built, texts[: args.time_texts], args.threads, args.rounds)
            for row in rows:
                if row["set"] == name and row["variant"] in timing:
                    row.update(timing[row["variant"]], time_texts=min(args.time_texts, len(texts)))
                    console.print(f"{name} {row['variant']}: {row['docs_per_second']:.1f} docs/s, {row['speed_vs_fp32']:.2f}x fp32")
    if args.results.is_file():
        # a run replaces its own rows and keeps the rest: other sets, and (with --only) the
        # other variants of the same student; rows timed before interleaved rounds are dropped
        ran = {(r["set"], r["variant"]) for r in rows}
        kept = [
            r
            for r in json.loads(args.results.read_text())["rows"]
            if (r["set"], r["variant"]) not in ran
            and (r["variant"] in known or r["variant"].startswith("optimum"))
            and "speed_vs_fp32" in r
        ]
        students = {r["set"]: r["student_sha256"] for r in rows}
        # rows of another student of the same set would not compare: only the same student's
        # (the same weights, wherever the checkpoint lies now) stay
        rows = [r for r in kept if r["set"] not in students or r.get("student_sha256") == students[r["set"]]] + rows
    fp32 = {r["set"]: r for r in rows if r["variant"] == "fp32"}
    cells = [
        [
            r["set"],
            r["variant"],
            f"{100 * r['accuracy']:.2f}",
            f"{100 * (r['accuracy'] - fp32[r['set']]['accuracy']):+.2f}",
            f"{100 * r['agreement']:.2f}",
            f"{r['docs_per_second']:.1f}",
            f"{r['speed_vs_fp32']:.2f}x",
            f"{r['model_mb']:.1f}",
            f"{r['model_mb'] / fp32[r['set']]['model_mb']:.2f}",
        ]
        for r in rows
    ]
    publish(
        console,
        f"int8 variants, {args.threads} threads, batch 32, CPU {isa}",
        ["set", "variant", "accuracy (%)", "vs fp32 (points)", "agreement (%)", "docs/s", "speed vs fp32", "model MB", "size vs fp32"],
        cells,
        args.results,
        {"isa": isa, "threads": args.threads, "rows": rows},
    )


def publish(console, title: str, headers: list[str], cells: list[list[str]], results: Path, payload: dict) -> None:
    """Print the rows as a table; write `payload` to `results` (JSON) and the table beside it (.md)."""
    from rich.table import Table

    from nanonet.runtimes.fsutil import atomic_write_text

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in cells:
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(results.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
