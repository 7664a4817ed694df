"""The checks that need a CUDA GPU, one step at a time (bench/gpu_check.sh runs them all).

    python bench/gpu_check.py tests    # the gpu- and tensorrt-marked tests
    python bench/gpu_check.py train    # a short nanonet train, bf16 on the GPU, against the same run on the CPU
    python bench/gpu_check.py student  # the exported student, packed (varlen) against padded (SDPA), batch 64
    python bench/gpu_check.py engine   # export --trt, nanonet engine (its numeric check), TensorRT vs ONNX Runtime
    python bench/gpu_check.py summary  # one table from bench/results/gpu_*.json; exit 1 if a step failed

Each step writes bench/results/gpu_<step>.json and prints its figures. GPU runs use the
machine's own torch as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "data" / "ag_news_sample"
YAHOO = ROOT.parent / "shared" / "data" / "yahoo_answers" / "test.jsonl"
NANONET = [sys.executable, "-m", "nanonet"]


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def write(step: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"step": step, "gpu": gpu_name(), "python": platform.python_version(), **result}
    path = RESULTS / f"gpu_{step}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=None))


def _train(out: Path, cpu: bool, steps: int) -> dict:
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {})}
    # torch_varlen has no attention dropout: 0 for both runs, so they differ only by device
    cmd = NANONET + ["train", "--data", str(DATA), "--out", str(out), "--steps", str(steps), "--eval-every", "10", "--seed", "1"]
    cmd += ["--attention-dropout", "0", "--json"] + ([] if cpu else ["--attention", os.environ.get("GPU_ATTENTION", "auto")])
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"nanonet train ({'cpu' if cpu else 'gpu'}) failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    report = json.loads(done.stdout)
    student = report["students"][report["chosen_student"]]
    t = report["training"]
    return {
        "device": t["device"],
        "attention_backend": t["attention_backend"],
        "test_accuracy": student["test"]["accuracy"],
        "teacher_test_accuracy": report["teacher"]["test"]["accuracy"],
        "training_seconds": t["seconds"],
        "tokens_per_second": t["tokens_per_second"],
        "wall_seconds": round(time.perf_counter() - tic, 1),
    }


def tests_step(args) -> None:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or tensorrt", f"--junitxml={report}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        suite = ET.parse(report).getroot().find("testsuite") if report.is_file() else None
    counts = {k: int(suite.get(k, 0)) if suite is not None else 0 for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    print(done.stdout[-3000:])
    write(
        "tests",
        {
            "ok": done.returncode == 0 and passed > 0,
            "passed": passed,
            "failed": counts["failures"] + counts["errors"],
            "skipped": counts["skipped"],
        },
    )


def train_step(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gpu = _train(Path(tmp) / "gpu", cpu=False, steps=args.steps)
        cpu = _train(Path(tmp) / "cpu", cpu=True, steps=args.steps)
    # one run's noise on the 200 test texts of the sample: a binomial std of about 3 points at 80%
    noise = 2 * (0.8 * 0.2 / 200) ** 0.5
    ok = gpu["device"] == "cuda" and abs(gpu["test_accuracy"] - cpu["test_accuracy"]) <= noise
    write(
        "train",
        {
            "ok": ok,
            "accuracy_bound": round(noise, 4),
            "gpu_run": gpu,
            "cpu_run": cpu,
            "speedup": round(gpu["tokens_per_second"] / cpu["tokens_per_second"], 2),
        },
    )


def _yahoo_lengths(batch: int) -> list[int]:
    from nanonet.model.hf import load_pretrained

    texts = [json.loads(line)["text"] for line in YAHOO.read_text().splitlines()[:batch]] if YAHOO.is_file() else []
    if len(texts) < batch:  # without the benchmark data: the sample's texts, repeated
        texts = [json.loads(line)["text"] for line in (DATA / "test.jsonl").read_text().splitlines()]
        texts = (texts * (batch // len(texts) + 1))[:batch]
    tok = load_pretrained("sentence-transformers/all-MiniLM-L6-v2").tokenizer
    return [len(tok.encode(t).ids[:128]) for t in texts]


def student_step(args) -> None:
    """The 3-layer student of the default teacher, bf16, one forward of a batch: packed
    tokens through the varlen backend against the padded batch through SDPA."""
    import torch
    from gpu_attention import timed  # bench/ is on the path of a script run from it

    from nanonet.model import pack_sequences
    from nanonet.model.checkpoint import make_student
    from nanonet.model.encoder import NanoClassifier
    from nanonet.model.hf import load_pretrained

    lengths = _yahoo_lengths(args.batch)
    src = load_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1000, 20000, (n,), generator=g).tolist() for n in lengths]
    runs = []
    for backend in ("auto", "sdpa"):
        enc = make_student(src.encoder, [0, 2, 4])
        enc.attention = backend
        model = NanoClassifier(enc, 10, src.pooling).cuda().eval().to(torch.bfloat16)
        batch = pack_sequences(seqs).to("cuda")
        with torch.no_grad():
            logits = model(batch)
            ms = timed(lambda model=model, batch=batch: model(batch), reps=30, warm=5)
        from nanonet.model.attention import pick_backend

        name = pick_backend(batch.cu_seqlens.device, torch.bfloat16, enc.config.head_size, backend).name
        runs.append({"requested": backend, "backend": name, "ms": round(ms, 3), "logits": logits.float().cpu()})
    diff = float((runs[0]["logits"] - runs[1]["logits"]).abs().max())
    for r in runs:
        del r["logits"]
    ok = runs[0]["backend"] != "sdpa" and diff <= 5e-2 * 10
    write(
        "student",
        {
            "ok": ok,
            "batch": args.batch,
            "tokens": sum(lengths),
            "max_length": max(lengths),
            "runs": runs,
            "max_abs_logit_diff": diff,
            "speedup": round(runs[1]["ms"] / runs[0]["ms"], 2),
        },
    )


def engine_step(args) -> None:
    """Export a tiny-trained student with --trt, build its engine (which runs the numeric
    check before writing model.plan) and compare TensorRT's and ONNX Runtime's probabilities."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        write("engine", {"ok": True, "skipped": "TensorRT is not importable here"})
        return
    import numpy as np

    from nanonet import runtimes

    with tempfile.TemporaryDirectory() as tmp:
        run, bundle = Path(tmp) / "run", Path(tmp) / "bundle"
        for cmd in (
            ["train", "--data", str(DATA), "--out", str(run), "--steps", "10", "--contrastive-steps", "5", "--eval-every", "10", "--json"],
            ["export", str(run / "student"), "--out", str(bundle), "--trt"],
        ):
            done = subprocess.run(NANONET + cmd, capture_output=True, text=True)
            if done.returncode != 0 and cmd[0] == "train":
                raise SystemExit(f"nanonet {cmd[0]} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        results = []
        for plugin in ("aot", "jit"):
            done = subprocess.run(NANONET + ["engine", str(bundle), "--plugin", plugin], capture_output=True, text=True)
            entry = {
                "plugin": plugin,
                "rc": done.returncode,
                "log": done.stdout.strip().splitlines()[-3:] + done.stderr.strip().splitlines()[-3:],
            }
            if done.returncode == 0 and plugin == "aot":
                texts = [json.loads(line)["text"] for line in (DATA / "test.jsonl").read_text().splitlines()[:64]]
                trt_p = runtimes.load(bundle, backend="tensorrt").predict_proba(texts)
                ort_p = runtimes.load(bundle, backend="onnxruntime").predict_proba(texts)
                entry["max_abs_prob_diff"] = float(np.abs(trt_p - ort_p).max())
                entry["argmax_agreement"] = float((trt_p.argmax(-1) == ort_p.argmax(-1)).mean())
                manifest = json.loads((bundle / "manifest.json").read_text())
                entry["verification"] = manifest["export"]["tensorrt"]["engine"].get("verification")
            results.append(entry)
    ok = all(r["rc"] == 0 for r in results) and results[0].get("max_abs_prob_diff", 1.0) < 2e-2
    write("engine", {"ok": ok, "runs": results})


def summary_step(args) -> None:
    rows, failed = [], False
    for step in ("tests", "train", "attention", "student", "engine"):
        path = RESULTS / f"gpu_{step}.json"
        if not path.is_file():
            rows.append((step, "MISSING", "no results file"))
            failed = True
            continue
        r = json.loads(path.read_text())
        ok = r.get("ok", True)
        failed |= not ok
        detail = r.get("skipped") or ", ".join(f"{k}={r[k]}" for k in ("speedup", "max_abs_logit_diff", "passed", "failed") if k in r)
        if step == "train" and "gpu_run" in r:
            detail += f", accuracy gpu {r['gpu_run']['test_accuracy']:.3f} cpu {r['cpu_run']['test_accuracy']:.3f} ({r['gpu_run']['attention_backend']})"
        rows.append((step, "ok" if ok else "FAILED", detail))
    width = max(len(s) for s, _, _ in rows)
    print(f"GPU check on {gpu_name()}")
    for step, status, detail in rows:
        print(f"  {step:<{width}}  {status:<7}  {detail}")
    sys.exit(1 if failed else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["tests", "train", "student", "engine", "summary"])
    ap.add_argument("--steps", type=int, default=40, help="train: optimizer steps of each run")
    ap.add_argument("--batch", type=int, default=64, help="student: texts per batch")
    args = ap.parse_args()
    steps = {"tests": tests_step, "train": train_step, "student": student_step, "engine": engine_step, "summary": summary_step}
    steps[args.step](args)


if __name__ == "__main__":
    main()
