"""Packed vs padded on a CPU: the nanonet encoder against transformers' BertModel.

Both run all-MiniLM-L6-v2 in fp32 on the same batches of real text, in the order the
data comes (no length sorting, so the padding is what an unsorted batch really has).
The nanonet encoder packs the tokens, so its projections and MLPs see only real tokens;
transformers runs the padded [B, L] batch. Also measured: the 3-layer student (0,2,4).

    python bench/encoder_throughput.py                      # ag_news and yahoo_answers test
    python bench/encoder_throughput.py --batches 10 --json  # quicker, JSON on stdout

Prints a table and writes bench/results/encoder_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from nanonet.model import load_pretrained, make_student, pack_padded
from nanonet.runtimes.fsutil import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "encoder_throughput.json"


def read_texts(path: Path, limit: int) -> list[str]:
    with path.open() as f:
        return [json.loads(line)["text"] for _, line in zip(range(limit), f)]


def time_batches(fn, batches, repeats: int) -> list[float]:
    fn(batches[0])  # warm-up
    times = []
    for _ in range(repeats):
        for b in batches:
            t = time.perf_counter()
            fn(b)
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,yahoo_answers")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import BertModel

    teacher = load_pretrained()
    student = make_student(teacher.encoder, [0, 2, 4]).eval()
    hf = BertModel.from_pretrained(str(teacher.path), attn_implementation="sdpa").eval()
    tok = Tokenizer.from_file(str(teacher.tokenizer_file))
    tok.enable_truncation(teacher.encoder.config.max_length)
    tok.enable_padding(pad_id=0)

    rows = []
    for name in args.sets.split(","):
        texts = read_texts(args.data / name / "test.jsonl", args.batch_size * args.batches)
        batches = []
        for i in range(0, len(texts), args.batch_size):
            enc = tok.encode_batch(texts[i : i + args.batch_size])
            batches.append(tuple(torch.tensor([getattr(e, f) for e in enc]) for f in ("ids", "attention_mask", "type_ids")))
        real = sum(int(m.sum()) for _, m, _ in batches)
        padded = sum(m.numel() for _, m, _ in batches)
        runs = {
            "transformers BertModel, padded": lambda b: hf(input_ids=b[0], attention_mask=b[1], token_type_ids=b[2]),
            "nanonet encoder, packed": lambda b: teacher.encoder(pack_padded(*b)),
            "nanonet student 0,2,4, packed": lambda b: student(pack_padded(*b)),
        }
        with torch.inference_mode():
            results = {label: time_batches(fn, batches, args.repeats) for label, fn in runs.items()}
        base = statistics.median(next(iter(results.values())))
        for label, times in results.items():
            med = statistics.median(times)
            rows.append(
                {
                    "set": name,
                    "model": label,
                    "batch_size": args.batch_size,
                    "batches": len(batches),
                    "median_batch_ms": round(med * 1e3, 2),
                    "docs_per_s": round(args.batch_size / med, 1),
                    "speedup_vs_transformers": round(base / med, 2),
                    "padding_share": round(1 - real / padded, 3),
                }
            )

    report = {
        "benchmark": "encoder_throughput",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__},
        "rows": rows,
    }
    atomic_write_text(OUT, json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"Encoder throughput, CPU fp32, batch {args.batch_size}, {args.threads} threads (median of {args.batches}x{args.repeats} batches)"
    )
    for col in ("set", "model", "padding share", "median ms/batch", "docs/s", "vs transformers"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["set"],
            r["model"],
            f"{r['padding_share']:.0%}",
            f"{r['median_batch_ms']:.1f}",
            f"{r['docs_per_s']:.0f}",
            f"{r['speedup_vs_transformers']:.2f}x",
        )
    Console(width=140).print(table)
    print("\n| set | model | padding share | median ms/batch | docs/s | vs transformers |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['model']} | {r['padding_share']:.0%} | {r['median_batch_ms']:.1f} | "
            f"{r['docs_per_s']:.0f} | {r['speedup_vs_transformers']:.2f}x |"
        )
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
