"""The label-scarce figures, drawn from bench/results/label_scarce.json (no training here).

docs/learning_curve.png      test accuracy against the labeled examples a run saw per class
                             (training + selection), nanonet against SetFit, one panel per set
                             that has more than one N; nanonet's runs that held labels for
                             selection (the earlier default) are a series of their own
docs/accuracy_vs_speed.png   test accuracy against inference docs/s at 10 labels per class:
                             nanonet fp32 and int8, SetFit, model2vec, the supervised teacher

  python bench/plots.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "label_scarce.json"
DOCS = HERE.parent / "docs"
CURVE_ROWS = {
    "NanoNet chosen student (bias)": "nanonet student",
    "SetFit (MiniLM-L6, all parameters)": "SetFit",
    "SetFit on training + selection rows": "SetFit",  # SetFit on 2N per class: the same series
    "SetFit, 20 pairs of each kind per text": "SetFit, 20 pairs per text",  # hwu64's SetFit row
}
HELD = " (N more per class held for selection)"
SPEED_ROWS = {
    "NanoNet chosen student (bias)": "nanonet student fp32",
    "NanoNet chosen student, int8": "nanonet student int8",
    "SetFit (MiniLM-L6, all parameters)": "SetFit",
    "SetFit, 20 pairs of each kind per text": "SetFit, 20 pairs per text",
    "model2vec static + logistic regression": "model2vec + LR",
    "teacher, supervised only (all parameters)": "teacher (6 layers), supervised",
}


def save(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    plt.close(fig)
    print(f"wrote {path.relative_to(HERE.parent)}")


def learning_curve(summary: list[dict]) -> None:
    sets = sorted({s["set"] for s in summary if s["row"] in CURVE_ROWS and s["labels_per_class"] != 10})
    if not sets:
        print("learning curve: no runs at other than 10 labels per class yet")
        return
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets):
        rows = [s for s in summary if s["set"] == name and s["row"] in CURVE_ROWS]
        # a peer's rows hold exactly N per class, so the fewest seen per N is the class count
        classes = min(s["labeled_seen"] / s["labels_per_class"] for s in rows if s["row"] != "NanoNet chosen student (bias)")
        series: dict[str, list] = {}
        for s in rows:
            seen = s["labeled_seen"] / classes  # labeled examples seen per class, training + selection
            held = s["row"].startswith("NanoNet") and seen > s["labels_per_class"] + 0.5
            series.setdefault(CURVE_ROWS[s["row"]] + (HELD if held else ""), []).append(
                (round(seen, 1), s["mean"], s["std"], len(s["seeds"]))
            )
        for label, points in series.items():
            n, mean, std, seeds = zip(*sorted(points))
            ax.errorbar(n, mean, yerr=std, marker="o", capsize=3, label=label, linestyle="--" if HELD in label else "-")
            for x, y, k in zip(n, mean, seeds):
                if k == 1:  # a point of one seed has no spread to show: say so
                    ax.annotate("1 seed", (x, y), textcoords="offset points", xytext=(-14, -12), fontsize=7)
        ax.set_xscale("log")
        ticks = sorted({round(x) for points in series.values() for x, *_ in points})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(name)
        ax.set_xlabel("labeled examples seen per class (training + selection)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, DOCS / "learning_curve.png")


def accuracy_vs_speed(summary: list[dict]) -> None:
    sets = sorted({s["set"] for s in summary if s["labels_per_class"] == 10 and s["docs_per_second"]})
    if not sets:
        print("accuracy vs speed: no runs with docs/s yet")
        return
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for i, (row, label) in enumerate(SPEED_ROWS.items()):
            for s in summary:
                if s["set"] == name and s["row"] == row and s["labels_per_class"] == 10 and s["docs_per_second"]:
                    ax.scatter(s["docs_per_second"], s["mean"], s=40, color=f"C{i}")  # one colour per row in every panel
                    below = "int8" in label  # int8 sits beside fp32: its label goes under the point
                    ax.annotate(
                        label, (s["docs_per_second"], s["mean"]), fontsize=8, xytext=(4, -10 if below else 4), textcoords="offset points"
                    )
        ax.set_xscale("log")
        ax.margins(x=0.2)  # room for the rightmost point's label
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor ticks' labels overlap on a short span
        ax.set_title(f"{name}, 10 labels per class")
        ax.set_xlabel("inference docs/s (2 threads, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    save(fig, DOCS / "accuracy_vs_speed.png")


def main() -> None:
    summary = json.loads(RESULTS.read_text())["summary"]
    learning_curve(summary)
    accuracy_vs_speed(summary)


if __name__ == "__main__":
    main()
