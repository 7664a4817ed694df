"""Peak memory of `nanonet predict --input` as the input grows: streamed, it stays flat.

A one-layer student of the default teacher (its real tokenizer and vocabulary; one layer
keeps a million lines within minutes, and the model's size does not grow with the input)
is exported once; files of N short lines (hwu64's training utterances, cycled) are
classified by `nanonet predict --input FILE --output OUT`, each in its own process, whose
peak resident memory (VmHWM) is read as it exits.

    python bench/predict_memory.py                      # 10,000, 100,000 and 1,000,000 lines
    python bench/predict_memory.py --lines 10000,50000  # a quick look

Prints a table and writes bench/results/predict_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _paths import ROOT

from nanonet.runtimes.fsutil import atomic_write_text

DATA = ROOT.parent / "shared" / "data" / "hwu64" / "train.jsonl"
OUT = ROOT / "bench" / "results" / "predict_memory.json"
# runs `nanonet predict` and writes its own peak resident memory (MiB) to argv[1] as it exits
PROBE = (
    "import atexit, sys\n"
    "from nanonet.runtimes.benchmark import peak_rss_mb\n"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out, 'w').write(str(peak_rss_mb())))\n"
    "sys.argv = ['nanonet', *sys.argv[2:]]\n"
    "from nanonet.cli import main\n"
    "main()\n"
)


def one_layer_bundle(out: Path) -> Path:
    from nanonet.export.bundle import export_bundle
    from nanonet.model.checkpoint import make_student, save_checkpoint
    from nanonet.model.encoder import NanoClassifier
    from nanonet.model.hf import load_pretrained

    src = load_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    model = NanoClassifier(make_student(src.encoder, [0]), 64, src.pooling)
    ckpt = save_checkpoint(out / "ckpt", model, [f"c{i}" for i in range(64)], src.path)
    export_bundle(ckpt, out / "bundle", max_length=128)
    return out / "bundle"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", default="10000,100000,1000000")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in DATA.read_text().splitlines()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = one_layer_bundle(tmp)
        for n in (int(x) for x in args.lines.split(",")):
            source = tmp / f"in-{n}.txt"
            with source.open("w") as f:
                for i in range(n):
                    f.write(texts[i % len(texts)] + "\n")
            peak_file, target = tmp / "peak", tmp / "out.jsonl"
            cmd = [sys.executable, "-c", PROBE, str(peak_file), "predict", str(bundle), "--input", str(source)]
            cmd += ["--output", str(target), "--threads", str(args.threads), "--json"]
            tic = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.perf_counter() - tic
            if done.returncode != 0:
                raise SystemExit(f"predict on {n} lines failed: {done.stderr.strip().splitlines()[-1:]}")
            summary = json.loads(done.stdout)
            rows.append(
                {
                    "lines": n,
                    "input_mb": round(source.stat().st_size / 2**20, 1),
                    "predicted": summary["predicted"],
                    "seconds": round(seconds, 1),
                    "lines_per_second": round(n / seconds),
                    "peak_rss_mb": round(float(peak_file.read_text()), 1),
                }
            )
            print(
                f"{n:>9,} lines  {rows[-1]['input_mb']:>6} MB in  {rows[-1]['seconds']:>7} s  peak {rows[-1]['peak_rss_mb']:>7} MB",
                flush=True,
            )
            source.unlink()
            target.unlink()
    result = {
        "benchmark": "predict --input peak memory",
        "command": "python bench/predict_memory.py --lines " + args.lines,
        "model": "1-layer student of all-MiniLM-L6-v2 (layer 0), 64 labels, max length 128",
        "threads": args.threads,
        "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version()},
        "rows": rows,
    }
    OUT.parent.mkdir(exist_ok=True)
    atomic_write_text(OUT, json.dumps(result, indent=2) + "\n")
    print("| lines | input MB | seconds | lines/s | peak MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lines']:,} | {r['input_mb']} | {r['seconds']} | {r['lines_per_second']:,} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
