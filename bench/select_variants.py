"""How `nanonet select` embeds and picks, compared on dev: embedding precision and length,
and the cold-start picking rule, scored without training a model.

A cold start's picks are good when a classifier taught by them alone is accurate. Each
variant picks B texts (4 and 10 times the number of classes, seeds 1-3) from the pool; the
person is simulated with the gold labels; a nearest-class-mean classifier over the
reference embeddings (the teacher in fp32 at 128 tokens, centred on the pool's mean) is
fit on the picks and scored on dev. Also: class coverage of the picks, and the seconds the
embedding pass took (all variants in one run, one after the other). Random picks give the
baseline. No test data is read.

Dev: hwu64's dev file; ag_news has none, so 1,000 texts held out of its train file (fixed)
are the dev set and the rest the pool.

    python bench/select_variants.py                    # both sets, every variant
    python bench/select_variants.py --sets hwu64

Writes bench/results/select_variants.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nanonet.active import picking
from nanonet.active.pool import Embedded, centred, embed_texts
from nanonet.active.select import int8_linear, teacher_embedder
from nanonet.runtimes.fsutil import atomic_write_text

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
OUT = HERE / "results" / "select_variants.json"
TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
REFERENCE = "fp32, 128 tokens"
EMBEDDINGS = {REFERENCE: ("fp32", 128), "int8, 128 tokens": ("int8", 128), "fp32, 64 tokens": ("fp32", 64), "int8, 64 tokens": ("int8", 64)}
AG_NEWS_DEV = 1000
SEEDS = (1, 2, 3)
MULTIPLES = (4, 10)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pool_and_dev(name: str) -> tuple[list[dict], list[dict]]:
    train = read_jsonl(DATA / name / "train.jsonl")
    dev_file = DATA / name / "dev.jsonl"
    if dev_file.is_file():
        return train, read_jsonl(dev_file)
    held = set(np.random.default_rng(11).permutation(len(train))[:AG_NEWS_DEV].tolist())
    return [r for i, r in enumerate(train) if i not in held], [r for i, r in enumerate(train) if i in held]


def embed(texts: list[str], precision: str, max_length: int) -> tuple[Embedded, float]:
    embedder = teacher_embedder(TEACHER, max_length)
    model = int8_linear(embedder.model) if precision == "int8" else embedder.model
    tic = time.perf_counter()
    out = embed_texts(iter(texts), model, embedder.tokenizer_file, embedder.max_length, 4096, torch.device("cpu"))
    return out, time.perf_counter() - tic


def nearest_mean_accuracy(features: np.ndarray, labels: np.ndarray, rows: list[int], dev_x: np.ndarray, dev_y: np.ndarray) -> float:
    """Accuracy on dev of class means of the picked rows' features (a class with no pick is never predicted)."""
    classes = np.unique(labels[rows])
    means = np.stack([features[[r for r in rows if labels[r] == c]].mean(0) for c in classes])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return float(np.mean(classes[(dev_x @ means.T).argmax(1)] == dev_y))


def cold_start_rows(emb: Embedded, budget: int, seed: int) -> list[int]:
    return picking.cold_start(emb.vectors, emb.keys, budget, seed).rows


def without_top_components(emb: Embedded, d: int) -> Embedded:
    """The centred embeddings less their top `d` principal directions, renormalised (the
    rest of "All-but-the-top", Mu and Viswanath, ICLR 2018)."""
    _, _, vt = np.linalg.svd(emb.vectors - emb.vectors.mean(0), full_matrices=False)
    v = emb.vectors - (emb.vectors @ vt[:d].T) @ vt[:d]
    return Embedded((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), emb.keys)


def typical_rows(emb: Embedded, budget: int, seed: int, neighbours: int = 20) -> list[int]:
    """k-means as the cold start, but each cluster gives its most typical text: the highest mean
    similarity to its nearest neighbours within the cluster (TypiClust, Hacohen et al. 2022)."""
    _, assign = picking.kmeans(emb.vectors, budget, seed)
    rows = []
    for c in range(assign.max() + 1):
        members = np.flatnonzero(assign == c)
        if len(members) == 0:
            continue
        sim = emb.vectors[members] @ emb.vectors[members].T
        k = min(neighbours, len(members) - 1)
        density = np.sort(sim, axis=1)[:, -1 - k : -1].mean(1) if k > 0 else np.ones(1)
        rows.append(int(members[int(np.argmax(density))]))
    return rows


# Cold-start rules, tried on the PICKING_EMBEDDING embeddings.
PICKERS = {
    "k-means, top 1 component removed": lambda e, b, s: cold_start_rows(without_top_components(e, 1), b, s),
    "k-means, top 3 components removed": lambda e, b, s: cold_start_rows(without_top_components(e, 3), b, s),
    "k-means, most typical text": typical_rows,
}
PICKING_EMBEDDING = "int8, 128 tokens"


def run_set(name: str, results: dict) -> None:
    pool, dev = pool_and_dev(name)
    texts = [r["text"] for r in pool]
    classes = sorted({r["label"] for r in pool})
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[r["label"]] for r in pool])
    dev_y = np.array([index.get(r["label"], -1) for r in dev])
    reference = None
    for variant, (precision, max_length) in EMBEDDINGS.items():
        emb, seconds = embed(texts, precision, max_length)
        if variant == REFERENCE:
            reference, _ = embed([r["text"] for r in dev], "fp32", 128)
            centred(emb, reference)
            features = emb.vectors
        else:
            centred(emb)
        print(f"{name}: {variant} embedded {len(texts):,} texts in {seconds:.1f} s", flush=True)
        results[f"{name}|embedding|{variant}"] = {"set": name, "variant": variant, "texts": len(texts), "seconds": round(seconds, 1)}
        for multiple in MULTIPLES:
            budget = multiple * len(classes)
            for seed in SEEDS:
                rows = cold_start_rows(emb, budget, seed)
                record(results, name, f"cold start, {variant}", budget, seed, rows, labels, features, reference.vectors, dev_y)
                if variant != PICKING_EMBEDDING:
                    continue
                for rule, pick in PICKERS.items():
                    record(
                        results,
                        name,
                        f"{rule}, {variant}",
                        budget,
                        seed,
                        pick(emb, budget, seed),
                        labels,
                        features,
                        reference.vectors,
                        dev_y,
                    )
    for multiple in MULTIPLES:
        budget = multiple * len(classes)
        for seed in SEEDS:
            rows = np.random.default_rng([seed, budget, 1]).permutation(len(pool))[:budget].tolist()
            record(results, name, "random", budget, seed, rows, labels, features, reference.vectors, dev_y)
    save(results)


def record(results, name, strategy, budget, seed, rows, labels, features, dev_x, dev_y) -> None:
    results[f"{name}|{strategy}|{budget}|{seed}"] = {
        "set": name,
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "coverage": int(len(np.unique(labels[rows]))),
        "dev_accuracy": nearest_mean_accuracy(features, labels, rows, dev_x, dev_y),
    }


def save(results: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(results, indent=1, sort_keys=True) + "\n")


def markdown(results: dict) -> str:
    groups: dict[tuple, list[dict]] = {}
    for key, r in results.items():
        if "|embedding|" not in key:
            groups.setdefault((r["set"], r["budget"], r["strategy"]), []).append(r)
    lines = ["| set | labels | strategy | dev accuracy (nearest mean), mean ± std | coverage (mean) | seeds |", "|---|---|---|---|---|---|"]
    for (name, budget, strategy), rows in sorted(groups.items()):
        acc = [100 * r["dev_accuracy"] for r in rows]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        cov = statistics.mean(r["coverage"] for r in rows)
        lines.append(f"| {name} | {budget} | {strategy} | {statistics.mean(acc):.1f} ± {std:.1f} | {cov:.1f} | {len(rows)} |")
    lines += ["", "| set | embedding | texts | seconds |", "|---|---|---|---|"]
    for key, r in sorted(results.items()):
        if "|embedding|" in key:
            lines.append(f"| {r['set']} | {r['variant']} | {r['texts']:,} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="ag_news,hwu64")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for name in [s for s in args.sets.split(",") if s]:
        if not (DATA / name / "train.jsonl").is_file():
            sys.exit(f"--sets: no data set '{name}' in {DATA}")
        run_set(name, results)
    print(markdown(results))


if __name__ == "__main__":
    main()
