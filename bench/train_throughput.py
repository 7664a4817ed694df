"""Training throughput, packed vs padded, on a CPU (yahoo_answers has long, uneven texts).

One training step = forward + backward + AdamW update of a bias-only student (layers
0,2,4 of all-MiniLM-L6-v2, mean pooling, linear head) on a batch of 32 texts in data
order. The same weights and the same rows run two ways:
  - padded: transformers' BertModel on the [B, L] batch (what a padded trainer does)
  - packed: the nanonet encoder on the packed tokens (no pad token reaches a layer)

    python bench/train_throughput.py [--set yahoo_answers] [--steps 15]

Prints a table and writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from nanonet.model import NanoClassifier, load_pretrained, make_student, pack_padded
from nanonet.runtimes.fsutil import atomic_write_text
from nanonet.train.peft import set_trainable

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "train_throughput.json"
LAYERS = [0, 2, 4]


def hf_student(path: Path, num_labels: int):
    """transformers' BertModel keeping layers 0,2,4, with the same pooling and head."""
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(path), attn_implementation="sdpa", add_pooling_layer=False)
    bert.encoder.layer = torch.nn.ModuleList(bert.encoder.layer[i] for i in LAYERS)
    bert.config.num_hidden_layers = len(LAYERS)
    head = torch.nn.Linear(bert.config.hidden_size, num_labels)
    for name, p in bert.named_parameters():
        p.requires_grad_(name.endswith(".bias"))
    return bert, head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="yahoo_answers")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher = load_pretrained()
    with (args.data / args.set / "train.jsonl").open() as f:
        rows = [json.loads(line) for _, line in zip(range(args.batch_size * (args.steps + 1)), f)]
    labels = sorted({r["label"] for r in rows})
    tok = Tokenizer.from_file(str(teacher.tokenizer_file))
    tok.enable_truncation(teacher.encoder.config.max_length)
    tok.enable_padding(pad_id=0)
    batches = []
    for i in range(0, len(rows), args.batch_size):
        chunk = rows[i : i + args.batch_size]
        enc = tok.encode_batch([r["text"] for r in chunk])
        ids, mask = torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])
        batches.append((ids, mask, torch.tensor([labels.index(r["label"]) for r in chunk])))

    packed_model = NanoClassifier(make_student(teacher.encoder, LAYERS), len(labels), "mean")
    set_trainable(packed_model, "bias")
    bert, head = hf_student(teacher.path, len(labels))
    head.load_state_dict(packed_model.head.state_dict())

    def packed_step(b, opt):
        loss = F.cross_entropy(packed_model(pack_padded(b[0], b[1])), b[2])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def padded_step(b, opt):
        states = bert(input_ids=b[0], attention_mask=b[1]).last_hidden_state
        pooled = (states * b[1][..., None]).sum(1) / b[1].sum(1, keepdim=True)
        loss = F.cross_entropy(head(F.dropout(pooled, 0.1, training=True)), b[2])
        opt.zero_grad()
        loss.backward()
        opt.step()

    runs = {
        "padded (transformers BertModel)": (padded_step, [p for p in [*bert.parameters(), *head.parameters()] if p.requires_grad]),
        "packed (nanonet)": (packed_step, [p for p in packed_model.parameters() if p.requires_grad]),
    }
    real = sum(int(b[1].sum()) for b in batches[1:])
    padded_positions = sum(b[1].numel() for b in batches[1:])
    rows_out = []
    for label, (step, params) in runs.items():
        opt = torch.optim.AdamW(params, lr=1e-3)
        step(batches[0], opt)  # warm-up
        times = []
        for b in batches[1:]:
            t = time.perf_counter()
            step(b, opt)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows_out.append({"mode": label, "median_step_s": round(med, 3), "real_tokens_per_s": round(real / len(times) / med, 1)})
    ratio = rows_out[0]["median_step_s"] / rows_out[1]["median_step_s"]
    report = {
        "benchmark": "train_throughput",
        "set": args.set,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "padding_share": round(1 - real / padded_positions, 3),
        "rows": rows_out,
        "packed_speedup": round(ratio, 2),
    }
    atomic_write_text(OUT, json.dumps(report, indent=2) + "\n")
    table = Table(title=f"Training step, {args.set}, batch {args.batch_size}, bias-only student {LAYERS}, CPU fp32, {args.threads} threads")
    for col in ("mode", "median s/step", "real tokens/s"):
        table.add_column(col)
    for r in rows_out:
        table.add_row(r["mode"], f"{r['median_step_s']:.3f}", f"{r['real_tokens_per_s']:,.0f}")
    Console(width=120).print(table)
    print(f"padding share of the padded batches: {report['padding_share']:.0%}; packed speed-up: {ratio:.2f}x")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
