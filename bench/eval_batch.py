"""How the token budget of an evaluation batch sets the teacher's throughput on a CPU.

A run's passes without gradients (label propagation's embedding of the unlabeled pool,
the cached teacher logits, dev and test) go through `eval_batches`: texts in length
order, packed into batches of at most `--eval-tokens` real tokens. On a CPU a larger
batch is not faster: its activations (a 16,384-token batch's MLP holds 100 MB per
layer) fall out of the cache. This measures the teacher (all-MiniLM-L6-v2, fp32) over
the first texts of each set's train file, cut at 128 tokens as a default run does, at
each budget.

    python bench/eval_batch.py                         # ag_news, hwu64, yahoo_answers
    python bench/eval_batch.py --texts 500 --repeats 1 # quicker

Prints a table and writes bench/results/eval_batch.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from encoder_throughput import read_texts  # bench/, beside this file
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from nanonet.data.tokens import tokenize
from nanonet.model import load_pretrained
from nanonet.model.encoder import NanoClassifier
from nanonet.runtimes.fsutil import atomic_write_text
from nanonet.train.evaluate import embed

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "eval_batch.json"
BUDGETS = (1024, 2048, 4096, 8192, 16384)


def summarize(name: str, texts: int, mean_tokens: float, seconds: dict[int, list[float]]) -> list[dict]:
    """One row per budget: median seconds of a pass, docs/s, and the speed-up over 16,384 tokens."""
    base = statistics.median(seconds[max(BUDGETS)])
    rows = []
    for budget in BUDGETS:
        med = statistics.median(seconds[budget])
        rows.append(
            {
                "set": name,
                "eval_tokens": budget,
                "texts": texts,
                "mean_tokens": round(mean_tokens, 1),
                "median_s": round(med, 2),
                "docs_per_s": round(texts / med, 1),
                "speedup_vs_16384": round(base / med, 2),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="ag_news,hwu64,yahoo_answers")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--texts", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    teacher = load_pretrained()
    model = NanoClassifier(teacher.encoder, 2, pooling=teacher.pooling)

    rows = []
    sets = args.sets.split(",")
    with Progress() as bar:
        task = bar.add_task("passes", total=len(sets) * (1 + args.repeats * len(BUDGETS)))
        for name in sets:
            texts = read_texts(args.data / name / "train.jsonl", args.texts)
            tokens = tokenize(texts, teacher.tokenizer_file, args.max_length, cache=False)
            bar.update(task, description=name)
            embed(model, tokens, 2048, cpu)  # warm-up
            bar.advance(task)
            seconds = {}
            for _ in range(args.repeats):  # budgets interleaved, so a slow spell of the machine hits them all
                for budget in BUDGETS:
                    tic = time.perf_counter()
                    embed(model, tokens, budget, cpu)
                    seconds.setdefault(budget, []).append(time.perf_counter() - tic)
                    bar.advance(task)
            rows += summarize(name, len(texts), float(tokens.lengths.mean()), seconds)

    report = {
        "benchmark": "eval_batch",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__},
        "command": "python bench/eval_batch.py",
        "repeats": args.repeats,
        "rows": rows,
    }
    atomic_write_text(OUT, json.dumps(report, indent=2) + "\n")
    table = Table(title=f"Teacher embedding on a CPU, fp32, {args.threads} threads, median of {args.repeats}")
    for col in ("set", "mean tokens", "eval tokens", "s", "docs/s", "vs 16384"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["set"],
            f"{r['mean_tokens']}",
            str(r["eval_tokens"]),
            f"{r['median_s']:.2f}",
            f"{r['docs_per_s']:.0f}",
            f"{r['speedup_vs_16384']:.2f}x",
        )
    Console(width=120).print(table)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
