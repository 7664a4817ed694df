"""CPU inference, one run: the nanonet runtime against torch, transformers and optimum.

Rows, each on the ag_news and yahoo_answers test texts at batch 32 and batch 1, each in
its own process (so peak memory is that row's alone), all with the same thread count:

- nanonet runtime: the exported 0,2,4 student bundle through `runtimes` (ONNX Runtime);
  `predict_proba(texts, batch_size)` sorts the texts by length, so batches carry little padding
- nanonet student, torch padded: the same student in torch, batches in data order padded to
  their longest text (what a plain PyTorch deployment does)
- teacher, transformers: all-MiniLM-L6-v2 with a classification head
  (AutoModelForSequenceClassification), batches in data order, padded
- teacher, optimum ONNX Runtime: the same teacher exported by optimum and run through
  ORTModelForSequenceClassification. optimum-onnx pins transformers < 4.58, so this row runs
  in its own environment: `make bench-env` builds .venv-bench (or pass --optimum-python)

Speed does not depend on the head's weights: heads are freshly initialised (the label-scarce
benchmark measures accuracy). Documents per second are over the whole set; p50 is the median
latency of one call of `batch` documents. Install footprint: the on-disk size of the
distributions each row imports, with their dependencies, in the environment it ran in.

    make bench-env && python bench/cpu_inference.py            # ~10 minutes on 2 cores
    python bench/cpu_inference.py --limit 200 --sets ag_news   # quick look

Prints a table, writes bench/results/cpu_inference.json and a markdown table to
bench/results/cpu_inference.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
ROWS = ["nanonet runtime", "nanonet student, torch padded", "teacher, transformers", "teacher, optimum ONNX Runtime"]
IMPORTS = {  # what each row needs installed (its distributions and their dependencies)
    "nanonet runtime": ["numpy", "tokenizers", "onnxruntime"],
    "nanonet student, torch padded": ["torch", "tokenizers", "safetensors", "numpy"],
    "teacher, transformers": ["torch", "transformers"],
    "teacher, optimum ONNX Runtime": ["optimum-onnx", "onnxruntime", "transformers", "torch"],
}
CLASSES = {"ag_news": 4, "yahoo_answers": 10}


# ---- the workers: each runs in a fresh process and prints one JSON line ----------------


def _time_calls(call, batches: list[list[str]]) -> tuple[float, list[float]]:
    call(batches[0])  # warm-up
    lat = []
    for b in batches:
        t0 = time.perf_counter()
        call(b)
        lat.append(time.perf_counter() - t0)
    return sum(lat), lat


def worker(row: str, texts: list[str], batch: int, threads: int, model: str, classes: int) -> dict:
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    if row == "nanonet runtime":
        from nanonet import runtimes

        clf = runtimes.load(model, threads=threads)
        clf.predict_proba(texts[:batch], batch)  # warm-up
        t0 = time.perf_counter()
        clf.predict_proba(texts, batch)  # the whole set, as a user calls it: sorted by length inside
        total = time.perf_counter() - t0
        _, lat = _time_calls(lambda b: clf.predict_proba(b, batch), batches[: max(3, min(len(batches), 200 // batch + 3))])
        clf.stats.reset()
        clf.predict_proba(texts, batch)
        extra = {"overhead_share": clf.stats.overhead_share}
    elif row == "nanonet student, torch padded":
        import torch
        from tokenizers import Tokenizer

        from nanonet.export.padded import PaddedClassifier
        from nanonet.model.checkpoint import load_checkpoint

        torch.set_num_threads(threads)
        ckpt = load_checkpoint(model)
        net = PaddedClassifier(ckpt.model).eval()
        tok = Tokenizer.from_file(str(ckpt.tokenizer_file))
        tok.enable_truncation(ckpt.model.config.max_length)
        tok.enable_padding()

        def call(b):
            enc = tok.encode_batch(b)
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            with torch.inference_mode():
                return net(ids, mask, torch.zeros_like(ids))[1]

        total, lat = _time_calls(call, batches)
        extra = {}
    elif row == "teacher, transformers":
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        tok = AutoTokenizer.from_pretrained(model)
        net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=classes).eval()

        def call(b):
            enc = tok(b, padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                return net(**enc).logits.softmax(-1)

        total, lat = _time_calls(call, batches)
        extra = {}
    elif row == "teacher, optimum ONNX Runtime":
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForSequenceClassification
        from transformers import AutoConfig, AutoTokenizer

        exported = Path(tempfile.mkdtemp(prefix="optimum-teacher-"))
        config = AutoConfig.from_pretrained(model, num_labels=classes)
        ORTModelForSequenceClassification.from_pretrained(model, export=True, config=config).save_pretrained(exported)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        net = ORTModelForSequenceClassification.from_pretrained(exported, provider="CPUExecutionProvider", session_options=opts)
        tok = AutoTokenizer.from_pretrained(model)

        def call(b):
            enc = tok(b, padding=True, truncation=True, max_length=256, return_tensors="np")
            return net(**enc).logits

        total, lat = _time_calls(call, batches)
        extra = {}
    else:
        raise SystemExit(f"unknown row {row}")
    return {"docs_per_second": len(texts) / total, "p50_ms": 1000 * statistics.median(lat), "peak_rss_mb": _peak_mb(), **extra}


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry the parent's peak over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the driver ---------------------------------------------------------------------------


def footprint_mb(python: str, names: list[str]) -> float:
    """On-disk size of `names` and their dependencies, as installed for `python`."""
    code = r"""
import json, re, sys
from importlib.metadata import distribution, PackageNotFoundError
seen, todo, size = set(), list(json.loads(sys.argv[1])), 0
while todo:
    name = re.split(r"[ ;<>=!~\[(]", todo.pop())[0].lower().replace("_", "-")
    if name in seen: continue
    seen.add(name)
    try: d = distribution(name)
    except PackageNotFoundError: continue
    size += sum((f.size or 0) for f in (d.files or []))
    todo += [r for r in (d.requires or []) if "extra ==" not in r]
print(size)
"""
    done = subprocess.run([python, "-c", code, json.dumps(names)], capture_output=True, text=True, check=True)
    return int(done.stdout) / 1e6


def build_models(work: Path, classes: int, threads: int) -> tuple[str, str, str]:
    """(teacher HF dir, student checkpoint, student bundle) for `classes` labels."""
    import torch

    from nanonet.export.bundle import export_bundle
    from nanonet.model import load_pretrained, make_student
    from nanonet.model.checkpoint import save_checkpoint
    from nanonet.model.encoder import NanoClassifier

    torch.set_num_threads(threads)
    src = load_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    torch.manual_seed(0)
    student = NanoClassifier(make_student(src.encoder, [0, 2, 4]), classes, src.pooling)
    ckpt = save_checkpoint(work / f"student-{classes}", student, [str(i) for i in range(classes)], src.path)
    export_bundle(ckpt, work / f"bundle-{classes}")
    return str(src.path), str(ckpt), str(work / f"bundle-{classes}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,yahoo_answers")
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--limit", type=int, default=2000, help="test texts per set (batch 32)")
    ap.add_argument("--limit-batch1", type=int, default=500, help="test texts per set at batch 1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--optimum-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--worker", nargs=6, metavar=("ROW", "TEXTS", "BATCH", "THREADS", "MODEL", "CLASSES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        row, texts_file, batch, threads, model, classes = args.worker
        texts = json.loads(Path(texts_file).read_text())
        print(json.dumps(worker(row, texts, int(batch), int(threads), model, int(classes))))
        return

    from rich.console import Console
    from rich.table import Table

    from nanonet.runtimes.fsutil import atomic_write_text

    console = Console(width=150)
    has_optimum = Path(args.optimum_python).is_file()
    if not has_optimum:
        console.print(f"[yellow]{args.optimum_python} not found: the optimum row is skipped (make bench-env builds it)")
    results = []
    with tempfile.TemporaryDirectory(prefix="nanonet-bench-") as tmp:
        work = Path(tmp)
        for name in args.sets.split(","):
            models = build_models(work, CLASSES[name], args.threads)
            with open(args.data / name / "test.jsonl") as f:
                all_texts = [json.loads(line)["text"] for line in f]
            for batch in (int(b) for b in args.batches.split(",")):
                texts = all_texts[: args.limit if batch > 1 else args.limit_batch1]
                texts_file = work / f"{name}-{batch}.json"
                texts_file.write_text(json.dumps(texts))
                for row in ROWS:
                    python = args.optimum_python if "optimum" in row else sys.executable
                    if "optimum" in row and not has_optimum:
                        continue
                    model = {"nanonet runtime": models[2], "nanonet student, torch padded": models[1]}.get(row, models[0])
                    cmd = [python, __file__, "--worker", row, str(texts_file), str(batch), str(args.threads), model, str(CLASSES[name])]
                    with console.status(f"{name} batch {batch}: {row}"):
                        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
                    if done.returncode != 0:
                        raise SystemExit(f"{row} failed:\n{done.stderr[-3000:]}")
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    results.append({"set": name, "row": row, "batch": batch, "docs": len(texts), **r})
                    console.print(f"{name} b{batch} {row}: {r['docs_per_second']:.1f} docs/s, p50 {r['p50_ms']:.1f} ms")
    footprints = {
        row: footprint_mb(args.optimum_python if "optimum" in row else sys.executable, IMPORTS[row])
        for row in ROWS
        if "optimum" not in row or has_optimum
    }
    for r in results:
        r["install_mb"] = footprints[r["row"]]
    base = {(r["set"], r["batch"]): r["docs_per_second"] for r in results if r["row"] == "nanonet runtime"}
    for r in results:
        r["runtime_speedup"] = base[(r["set"], r["batch"])] / r["docs_per_second"]

    table = Table(title=f"CPU inference, {args.threads} threads", title_justify="left")
    lines = ["| set | batch | model | docs/s | p50 ms | peak MB | install MB | nanonet runtime is |", "|---|---|---|---|---|---|---|---|"]
    for col in ("set", "batch", "model", "docs/s", "p50 ms", "peak MB", "install MB", "runtime is"):
        table.add_column(col)
    for r in results:
        cells = [
            r["set"],
            str(r["batch"]),
            r["row"],
            f"{r['docs_per_second']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['install_mb']:.0f}",
            "-" if r["row"] == "nanonet runtime" else f"{r['runtime_speedup']:.2f}x faster",
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    overhead = [f"{r['set']} {100 * r['overhead_share']:.1f}%" for r in results if r["row"] == "nanonet runtime" and r["batch"] == 32]
    console.print("runtime overhead at batch 32 (tokenization, bucketing, copying): " + ", ".join(overhead))
    meta = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "cpu_inference.json", json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    atomic_write_text(RESULTS / "cpu_inference.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
