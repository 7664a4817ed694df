"""`nanonet quantize` and `nanonet validate`: int8 bundles and their checked accuracy."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nanonet.cli.app import app, err, pct, stdout


@app.command()
def quantize(
    bundle: str = typer.Argument(..., help="An fp32 bundle (from nanonet export)."),
    out: str = typer.Option(..., "--out", help="The int8 bundle to write (replaced atomically)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Unlabeled calibration text: JSONL, CSV, TSV or text."),
    method: Optional[str] = typer.Option(None, "--method", help="dynamic (default) | static (needs --calib)."),
    calibrator: str = typer.Option("minmax", "--calibrator", help="minmax | percentile | entropy (static)."),
    samples: int = typer.Option(1024, "--samples", help="Calibration texts sampled from --calib (half held out to check agreement)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the calibration sample."),
    target: str = typer.Option("cpu", "--target", help="cpu | tensorrt (explicit symmetric int8 Q/DQ)."),
    min_agreement: float = typer.Option(
        0.99, "--min-agreement", help="Keep the most sensitive layers in float until fp32 agreement reaches this."
    ),
    outliers: str = typer.Option(
        "auto",
        "--outliers",
        help="auto | always | off: with --calib (dynamic), input channels whose range exceeds 6x the median channel's multiply in float; auto: when agreement falls short.",
    ),
    smooth: float = typer.Option(
        0.0, "--smooth", help="SmoothQuant alpha with --calib, e.g. 0.75 (default 0: off): activation range moved into the weights."
    ),
    weight_bits: int = typer.Option(
        8, "--weight-bits", help="8 | 7 (dynamic): 7-bit weights keep the fast integer kernels on x86 CPUs without VNNI."
    ),
    text_col: str = typer.Option("text", "--text-col"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's quantization record as JSON."),
) -> None:
    """Quantize a bundle to int8 (ONNX Runtime), with calibration data and mixed precision."""
    from nanonet.extras import require

    require("onnx", "nanonet quantize")
    from nanonet.calibrate.quantize import quantize_bundle

    say = (lambda msg: None) if as_json else (lambda msg: err.print(escape(msg), highlight=False))
    with err.status("quantizing"):
        manifest = quantize_bundle(
            bundle,
            out,
            calib,
            say,
            method=method,
            calibrator=calibrator,
            samples=samples,
            seed=seed,
            target=target,
            min_agreement=min_agreement,
            text_col=text_col,
            threads=threads,
            smooth=smooth,
            outliers=outliers,
            weight_bits=weight_bits,
        )
    q = manifest["quantization"]
    if as_json:
        stdout.print_json(json.dumps(q))
        return
    agreement = "-" if q["agreement_held_out"] is None else f"{100 * q['agreement_held_out']:.1f}%"
    stdout.print(
        f"{escape(out)}: {manifest['precision']}, {q['census']['quantized_matmuls']} quantized matrix multiplications, "
        f"{len(q['kept_float'])} kept in float{(' (' + ', '.join(q['kept_float']) + ')') if q['kept_float'] else ''}"
        f"{_outlier_summary(q.get('outliers'))}; "
        f"agreement with fp32 on {q['calibration']['held_out']} held-out texts: {agreement}; "
        f"model.onnx {manifest['files']['model.onnx']['bytes'] / 1e6:.1f} MB"
    )


def _outlier_summary(split: dict | None) -> str:
    if not split or not split["channels"]:
        return ""
    n = sum(len(c) for c in split["channels"].values())
    return f", {n} outlier channels of {len(split['channels'])} multiplied in float"


@app.command()
def validate(
    candidate: str = typer.Argument(..., help="The bundle to check (e.g. the int8 one)."),
    reference: str = typer.Option(..., "--reference", help="The bundle to compare with (e.g. its fp32 source)."),
    data: str = typer.Option(..., "--data", help="Texts, labeled or not: JSONL, CSV, TSV or text."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Exit 1 when accuracy drops by more than this (a fraction)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    plot_file: Optional[str] = typer.Option(None, "--plot", help="Write a PNG: per-class accuracy, speed and size."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Compare a candidate bundle with a reference: accuracy, agreement, flips, speed, size; exit 1 past --max-drop."""
    from nanonet.calibrate.validate import plot
    from nanonet.calibrate.validate import validate as run

    if plot_file:
        from nanonet.extras import require

        require("matplotlib", "--plot")  # before the validation runs, not after
    report = run(candidate, reference, data, text_col, label_col, threads=threads)
    if plot_file:
        plot(report, plot_file)
    failed = report["accuracy_drop"] is not None and report["accuracy_drop"] > max_drop
    report["max_drop"], report["passed"] = max_drop, not failed
    if as_json:
        stdout.print_json(json.dumps(report))
    else:
        _print_validation(report)
    if failed:
        err.print(f"[bold red]failed:[/] accuracy dropped {100 * report['accuracy_drop']:.2f} points (limit {100 * max_drop:.2f})")
        raise typer.Exit(1)


def _print_validation(r: dict) -> None:
    table = Table(title=f"nanonet validate on {escape(r['data'])} ({r['n']} texts)", title_justify="left")
    for col in ("bundle", "precision", "accuracy", "macro-F1", "docs/s", "size MB"):
        table.add_column(col)
    for side in ("reference", "candidate"):
        b = r[side]
        table.add_row(
            escape(b["bundle"]),
            b["precision"],
            pct(b.get("accuracy")),
            pct(b.get("macro_f1")),
            f"{b['docs_per_second']:.1f}",
            f"{b['size_mb']:.1f}",
        )
    stdout.print(table)
    stdout.print(
        f"agreement {100 * r['agreement']:.2f}%, mean KL {r['mean_kl']:.2e}, max prob diff {r['max_prob_diff']:.3f}, "
        f"{r['flipped']} flipped; speed x{r['speedup']:.2f}, size x{r['size_ratio']:.2f}"
    )
    if r["per_class"]:
        per = Table(title="per-class accuracy", title_justify="left")
        for col in ("class", "n", "reference", "candidate", "change"):
            per.add_column(col)
        for name, c in r["per_class"].items():
            change = "-" if c["reference"] is None else f"{100 * (c['candidate'] - c['reference']):+.1f}"
            per.add_row(escape(name), str(c["n"]), pct(c["reference"]), pct(c["candidate"]), change)
        stdout.print(per)
    for f in r["flips"]:
        stdout.print(
            f"  flipped: {escape(f['reference'])} -> {escape(f['candidate'])} (gold {escape(str(f['gold']))}): {escape(f['text'][:100])}"
        )
