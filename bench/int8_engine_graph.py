"""The int8 TensorRT graph on a CPU: what each calibrator costs in accuracy before an engine.

For a trained student per set: export with --trt, then `nanonet quantize --target tensorrt
--calibrator C` for C in minmax, percentile, entropy (calibration text from dev where the
set has a dev file, else train; 1,024 samples, half held out). Each graph runs as the
engine builder would build it (`export.tensorrt.engine.network_graph`: float16 attention
in the plugin for int8 and fp16), through ONNX Runtime with the plugin's reference op, on
the set's test texts, packed. Rows:

- fp32: model.trt.onnx as exported (the reference for agreement)
- fp16 engine graph: the same, converted for `--precision fp16`
- int8 <calibrator>: the quantized model.trt.onnx, as `--precision int8` builds it, every
  weight product int8 (the agreement guard off)
- int8 <calibrator> + guard: the same with `--min-agreement` (default 0.99): the products
  that move the held-out calibration texts most stay float until they agree that much

Columns: test accuracy, agreement with fp32, mean absolute probability difference, the
held-out agreement the quantizer recorded, products kept float, quantization seconds. No speed: the graph's
speed on a CPU says nothing about an engine's.

    python bench/int8_engine_graph.py --student yahoo_answers=RUN/student

Prints a table, writes bench/results/int8_engine_graph.json (and .md beside it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
CALIBRATORS = ("minmax", "percentile", "entropy")


def packed_probs(graph: bytes, float16: bool, clf, texts: list[str], batch: int = 32) -> np.ndarray:
    """Class probabilities of a packed graph (serialized) on `texts`, in order, `batch` texts per run."""
    import onnx

    from nanonet.export.tensorrt.verify import packed_session
    from nanonet.runtimes.classifier import softmax
    from nanonet.runtimes.tensorrt import pack

    session = packed_session(model=onnx.load_from_string(graph), float16=float16)
    out = []
    for s in range(0, len(texts), batch):
        ids, cu, longest = pack(clf.pad([e.ids for e in clf.tokenizer.encode_batch(texts[s : s + batch])]))
        feed = {"input_ids": ids, "cu_seqlens": cu, "max_seqlen": np.zeros(longest, dtype=np.int32)}
        out.append(softmax(session.run(["logits"], feed)[0].astype(np.float32)))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", action="append", required=True, help="SET=CHECKPOINT (repeat per set)")
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=2000, help="test texts per set")
    ap.add_argument("--calibrators", default=",".join(CALIBRATORS))
    ap.add_argument("--guarded", default="percentile", help="calibrators that also get a row with the agreement guard on ('' for none)")
    ap.add_argument("--min-agreement", type=float, default=0.99, help="the guarded rows' --min-agreement")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--results", type=Path, default=RESULTS / "int8_engine_graph.json")
    args = ap.parse_args()

    from _paths import portable  # bench/_paths.py, beside this file
    from quantization import publish, student_set  # bench/quantization.py, beside this file
    from rich.console import Console

    from nanonet import runtimes
    from nanonet.calibrate.quantize import quantize_bundle
    from nanonet.export.bundle import export_bundle
    from nanonet.export.tensorrt.engine import network_graph

    console = Console(width=150)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nanonet-int8-graph-") as tmp:
        work = Path(tmp)
        for spec in args.student:
            name, ckpt, rows_in, calib, digest = student_set(spec, args.data, args.limit)
            texts = [r["text"] for r in rows_in]
            with console.status(f"{name}: export --trt"):
                export_bundle(ckpt, work / name / "fp32", trt=True)
            clf = runtimes.load(work / name / "fp32", threads=args.threads)
            gold = np.array([clf.labels.index(str(r["label"])) for r in rows_in])
            fp32_graph = (work / name / "fp32" / "model.trt.onnx").read_bytes()
            graphs = {
                "fp32": (fp32_graph, False, None, None),
                "fp16 engine graph": (network_graph(work / name / "fp32" / "model.trt.onnx", "jit", "fp16"), True, None, None),
            }
            runs = [(c, 1e-9) for c in args.calibrators.split(",")] + [(c, args.min_agreement) for c in args.guarded.split(",") if c]
            for calibrator, min_agreement in runs:
                label = f"int8 {calibrator}" + (f" + guard ({min_agreement})" if min_agreement > 1e-9 else "")
                out = work / name / label.replace(" ", "_")
                with console.status(f"{name}: quantize --target tensorrt --calibrator {calibrator} --min-agreement {min_agreement}"):
                    t0 = time.perf_counter()
                    manifest = quantize_bundle(
                        work / name / "fp32",
                        out,
                        calib,
                        method="static",
                        calibrator=calibrator,
                        target="tensorrt",
                        samples=args.samples,
                        threads=args.threads,
                        min_agreement=min_agreement,
                        say=lambda m: None,
                    )
                    seconds = time.perf_counter() - t0
                graphs[label] = (
                    network_graph(out / "model.trt.onnx", "jit", "int8"),
                    True,
                    manifest["quantization"]["tensorrt_graph"],
                    seconds,
                )
            ref = None
            for label, (graph, float16, record, seconds) in graphs.items():
                with console.status(f"{name}: measuring {label}"):
                    probs = packed_probs(graph, float16, clf, texts)
                if ref is None:
                    ref = probs
                pred = probs.argmax(-1)
                rows.append(
                    {
                        "set": name,
                        "variant": label,
                        "student": portable(ckpt, digest=digest),
                        "student_sha256": digest,
                        "n": len(texts),
                        "accuracy": float(np.mean(pred == gold)),
                        "agreement": float(np.mean(pred == ref.argmax(-1))),
                        "mean_abs_prob_diff": float(np.abs(probs - ref).mean()),
                        "held_out_agreement": None if record is None else record.get("agreement"),
                        "calibrator": None if record is None else record.get("calibrator"),
                        "quantize_seconds": seconds,
                        "kept_float": None if record is None else record.get("kept_float"),
                    }
                )
                console.print(f"{name} {label}: acc {rows[-1]['accuracy']:.4f} agree {rows[-1]['agreement']:.4f}")

    fp32 = {r["set"]: r for r in rows if r["variant"] == "fp32"}
    cells = [
        [
            r["set"],
            r["variant"],
            f"{100 * r['accuracy']:.2f}",
            f"{100 * (r['accuracy'] - fp32[r['set']]['accuracy']):+.2f}",
            f"{100 * r['agreement']:.2f}",
            f"{r['mean_abs_prob_diff']:.4f}",
            "-" if r["held_out_agreement"] is None else f"{100 * r['held_out_agreement']:.2f}",
            "-" if r.get("kept_float") is None else str(len(r["kept_float"])),
            "-" if r["quantize_seconds"] is None else f"{r['quantize_seconds']:.0f}",
        ]
        for r in rows
    ]
    publish(
        console,
        "TensorRT graphs as the builder makes them, run on a CPU (ONNX Runtime, plugin reference op)",
        [
            "set",
            "graph",
            "accuracy (%)",
            "vs fp32 (points)",
            "agreement (%)",
            "mean abs prob diff",
            "held-out agreement (%)",
            "kept float",
            "quantize s",
        ],
        cells,
        args.results,
        {"threads": args.threads, "samples": args.samples, "rows": rows},
    )


if __name__ == "__main__":
    main()
