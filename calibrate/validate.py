"""`validate`: a candidate bundle (say int8) against a reference (its fp32 source) on the
same texts: accuracy and macro-F1 (when labels exist), agreement, KL, probability
differences, per-class change, flipped examples, speed and size. The caller gates on
`accuracy_drop` (nanonet validate exits 1 above --max-drop)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from nanonet.runtimes.classifier import load
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.metrics import agreement, macro_f1
from nanonet.runtimes.texts import iter_records

FLIPS_SHOWN = 5


def _read(data: str | Path, text_col: str, label_col: str) -> tuple[list[str], list[str] | None]:
    texts, labels, missing = [], [], 0
    for rec in iter_records(data, text_col, label_col):
        if rec.error:
            raise NanonetError(f"{data}: line {rec.line}: {rec.error}")
        texts.append(rec.text)
        labels.append(rec.label)
        missing += rec.label is None
    if not texts:
        raise NanonetError(f"{data}: no texts")
    if 0 < missing < len(texts):
        raise NanonetError(f"{data}: {missing} of {len(texts)} rows have no '{label_col}'; label every row or none")
    return texts, (None if missing else labels)


def _timed(clf, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    clf.predict_proba(texts[:batch_size], batch_size)  # warm-up
    t0 = time.perf_counter()
    probs = clf.predict_proba(texts, batch_size)
    return probs, len(texts) / (time.perf_counter() - t0)


def validate(
    candidate: str | Path,
    reference: str | Path,
    data: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    batch_size: int = 32,
    threads: int | None = None,
) -> dict:
    cand, ref = load(candidate, threads=threads), load(reference, threads=threads)
    if cand.labels != ref.labels:
        raise NanonetError(f"{candidate}: labels {cand.labels} differ from the reference's {ref.labels}")
    texts, gold_names = _read(data, text_col, label_col)
    p_ref, ref_speed = _timed(ref, texts, batch_size)
    p_cand, cand_speed = _timed(cand, texts, batch_size)
    y_ref, y_cand = p_ref.argmax(-1), p_cand.argmax(-1)
    eps = 1e-12
    kl = np.sum(p_ref * (np.log(p_ref + eps) - np.log(p_cand + eps)), axis=-1)
    report = {
        "candidate": {
            "bundle": str(candidate),
            "precision": cand.bundle.manifest.precision,
            "docs_per_second": cand_speed,
            "size_mb": cand.bundle.size_bytes / 1e6,
        },
        "reference": {
            "bundle": str(reference),
            "precision": ref.bundle.manifest.precision,
            "docs_per_second": ref_speed,
            "size_mb": ref.bundle.size_bytes / 1e6,
        },
        "data": str(data),
        "n": len(texts),
        "batch_size": batch_size,
        "agreement": agreement(p_cand, p_ref),
        "mean_kl": float(kl.mean()),
        "max_prob_diff": float(np.abs(p_ref - p_cand).max()),
        "speedup": cand_speed / ref_speed,
        "size_ratio": cand.bundle.size_bytes / ref.bundle.size_bytes,
        "accuracy_drop": None,
        "per_class": None,
    }
    gold = None
    if gold_names is not None:
        index = {name: i for i, name in enumerate(ref.labels)}
        unknown = sorted(set(gold_names) - set(index))
        if unknown:
            raise NanonetError(f"{data}: label(s) {', '.join(unknown)} are not among the bundle's labels ({', '.join(ref.labels)})")
        gold = np.array([index[g] for g in gold_names])
        k = len(ref.labels)
        for side, y in (("reference", y_ref), ("candidate", y_cand)):
            report[side]["accuracy"] = float(np.mean(y == gold))
            report[side]["macro_f1"] = macro_f1(y, gold, k)
        report["accuracy_drop"] = report["reference"]["accuracy"] - report["candidate"]["accuracy"]
        report["per_class"] = {
            name: {
                "n": int(np.sum(gold == c)),
                "reference": float(np.mean(y_ref[gold == c] == c)) if np.any(gold == c) else None,
                "candidate": float(np.mean(y_cand[gold == c] == c)) if np.any(gold == c) else None,
            }
            for c, name in enumerate(ref.labels)
        }
    flips = np.flatnonzero(y_ref != y_cand)
    report["flipped"] = len(flips)
    report["flips"] = [
        {
            "index": int(i),
            "text": texts[i][:200],
            "reference": ref.labels[y_ref[i]],
            "candidate": ref.labels[y_cand[i]],
            "gold": gold_names[i] if gold_names else None,
            "kl": float(kl[i]),
        }
        for i in flips[np.argsort(-kl[flips])][:FLIPS_SHOWN]
    ]
    return report


def plot(report: dict, path: str | Path) -> Path:
    """Per-class accuracy side by side, and speed and size of both bundles, as one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NanonetError("--plot needs matplotlib; install it with: pip install 'nanonet[plot]'") from None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [3, 1, 1]})
    names = ("reference", "candidate")
    tags = [f"{n} ({report[n]['precision']})" for n in names]
    if report["per_class"]:
        classes = list(report["per_class"])
        x = np.arange(len(classes))
        for j, n in enumerate(names):
            axes[0].bar(x + (j - 0.5) * 0.4, [100 * (report["per_class"][c][n] or 0) for c in classes], 0.4, label=tags[j])
        axes[0].set_xticks(x, classes, rotation=30, ha="right")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].set_title(f"per-class accuracy (drop {100 * report['accuracy_drop']:.2f} points)")
        axes[0].legend(loc="lower right")
    else:
        axes[0].text(0.5, 0.5, f"no labels\nagreement {100 * report['agreement']:.1f}%", ha="center", va="center")
        axes[0].set_axis_off()
    axes[1].bar(tags, [report[n]["docs_per_second"] for n in names], color=["C0", "C1"])
    axes[1].set_title(f"docs/s, batch {report['batch_size']}")
    axes[2].bar(tags, [report[n]["size_mb"] for n in names], color=["C0", "C1"])
    axes[2].set_title("bundle size (MB)")
    for ax in axes[1:]:
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"{report['candidate']['bundle']} vs {report['reference']['bundle']}: agreement {100 * report['agreement']:.1f}%")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
