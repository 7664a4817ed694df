"""GPU attention at batch 64 on yahoo_answers' real length mix (needs a CUDA GPU).

Rows, fp16 and bf16, 12 heads of 32 (all-MiniLM-L6-v2's shape), global and a local
window of 64 each side, the same q/k/v for all:
- Triton varlen kernel (export/tensorrt/triton_varlen.py) on packed tokens
- torch varlen_attn (torch.nn.attention.varlen), packed, when this torch and GPU have it
- torch SDPA on the padded [64, nh, L, hs] batch with a padding (+ band) mask
Median of 50 timed calls after 10 warm-ups. The whole student packed against padded is
`bench/gpu_check.py student`.

    python bench/gpu_attention.py [--batch 64]

Prints one line per row and writes bench/results/gpu_attention.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "yahoo_answers" / "test.jsonl"
OUT = Path(__file__).resolve().parent / "results" / "gpu_attention.json"


def timed(fn, reps: int = 50, warm: int = 10) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_attention.py needs a CUDA GPU; none here")
    from tokenizers import Tokenizer

    from nanonet.export.tensorrt.triton_varlen import varlen_attention
    from nanonet.model import load_pretrained
    from nanonet.runtimes.fsutil import atomic_write_text

    src = load_pretrained()
    tok = Tokenizer.from_file(str(src.tokenizer_file))
    tok.no_padding()
    tok.enable_truncation(256)
    texts = [json.loads(line)["text"] for _, line in zip(range(args.batch), DATA.open())]
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    B, L, T, nh, hs = len(lengths), max(lengths), sum(lengths), 12, 32
    cu = torch.zeros(B + 1, dtype=torch.int32, device="cuda")
    cu[1:] = torch.tensor(lengths, device="cuda").cumsum(0)
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        qkv = torch.randn(T, 3 * nh * hs, device="cuda", dtype=dtype)
        q, k, v = qkv.view(T, 3, nh, hs).unbind(1)
        padded = torch.zeros(3, B, nh, L, hs, device="cuda", dtype=dtype)
        starts = cu[:-1].tolist()
        for i, (s, n) in enumerate(zip(starts, lengths)):
            for j, t in enumerate((q, k, v)):
                padded[j, i, :, :n] = t[s : s + n].transpose(0, 1)
        pos = torch.arange(L, device="cuda")
        keys = pos[None, :] < torch.tensor(lengths, device="cuda")[:, None]
        for window in (-1, 64):
            mask = keys[:, None, None, :] & (((pos[:, None] - pos[None, :]).abs() <= window) if window >= 0 else True)
            r = {"dtype": str(dtype).split(".")[-1], "window": window, "B": B, "L": L, "T": T, "padding": 1 - T / (B * L)}
            r["triton_ms"] = timed(lambda: varlen_attention(qkv, cu, L, nh, hs, hs**-0.5, window))
            r["sdpa_padded_ms"] = timed(lambda: F.scaled_dot_product_attention(padded[0], padded[1], padded[2], attn_mask=mask))
            try:
                from torch.nn.attention.varlen import varlen_attn

                r["torch_varlen_ms"] = timed(lambda: varlen_attn(q, k, v, cu, cu, L, L, window_size=(window, window)))
            except Exception as e:  # noqa: BLE001 - not every torch / GPU has it
                r["torch_varlen_ms"], r["torch_varlen_error"] = None, str(e).splitlines()[0]
            rows.append(r)
            print(r)
    OUT.parent.mkdir(exist_ok=True)
    atomic_write_text(OUT, json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
