"""Which ONNX export route gives the faster verified CPU graph?

- dynamo: torch.onnx.export(dynamo=True), opset 23 (SDPA -> ONNX `Attention`)
- legacy: the TorchScript exporter, opset 17, then ONNX Runtime's transformer optimizer

Both export the 0,2,4 student of all-MiniLM-L6-v2 (a fresh 4-class head), are verified
against torch, and run the same ag_news test texts through ONNX Runtime (CPU, 2 threads)
in length-sorted batches of 32, as the runtime feeds them. Median of 5 passes.

    python bench/export_routes.py [--texts 1024]

Prints a table and writes bench/results/export_routes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from nanonet.export.onnx_export import ROUTES, export_verified
from nanonet.model import load_pretrained, make_student
from nanonet.model.encoder import NanoClassifier
from nanonet.runtimes.classifier import pad_rows
from nanonet.runtimes.fsutil import atomic_write_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news" / "test.jsonl"
OUT = Path(__file__).resolve().parent / "results" / "export_routes.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    src = load_pretrained()
    model = NanoClassifier(make_student(src.encoder, [0, 2, 4]), 4, src.pooling).eval()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src.tokenizer_file))
    tok.no_padding()  # the packaged tokenizer.json pads to 128; the runtime pads per batch
    tok.enable_truncation(model.config.max_length)
    with args.data.open() as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(args.texts), f)]
    ids = sorted((e.ids for e in tok.encode_batch(texts)), key=len)
    batches = [pad_rows(ids[i : i + 32]) for i in range(0, len(ids), 32)]
    rows = []
    for route in ROUTES:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            path, facts = export_verified(model, model.config.max_length, route, None, Path(tmp))
            export_s = time.perf_counter() - t0
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            ops: dict[str, int] = {}
            for node in onnx.load(str(path)).graph.node:
                ops[node.op_type] = ops.get(node.op_type, 0) + 1
            for b in batches[:3]:
                session.run(["logits"], b)
            passes = []
            for _ in range(5):
                t0 = time.perf_counter()
                for b in batches:
                    session.run(["logits"], b)
                passes.append(time.perf_counter() - t0)
        med = statistics.median(passes)
        rows.append(
            {
                "route": route,
                "opset": facts["opset"],
                "export_seconds": export_s,
                "docs_per_second": len(texts) / med,
                "max_abs_diff": max(c["max_abs_diff"] for c in facts["verification"]),
                "attention_ops": ops.get("Attention", 0),
                "nodes": sum(ops.values()),
                "ops": ops,
            }
        )
    table = Table(
        title=f"export routes: 0,2,4 student, {len(texts)} ag_news texts, batch 32 sorted, {args.threads} threads", title_justify="left"
    )
    for col in ("route", "opset", "nodes", "Attention ops", "max abs diff", "docs/s", "vs dynamo"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["route"],
            str(r["opset"]),
            str(r["nodes"]),
            str(r["attention_ops"]),
            f"{r['max_abs_diff']:.1e}",
            f"{r['docs_per_second']:.1f}",
            f"{r['docs_per_second'] / rows[0]['docs_per_second']:.2f}x",
        )
    Console().print(table)
    OUT.parent.mkdir(exist_ok=True)
    atomic_write_text(OUT, json.dumps({"threads": args.threads, "texts": len(texts), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
