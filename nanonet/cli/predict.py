"""`nanonet predict` and `nanonet bench`: run a bundle with the torch-free runtime."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nanonet.cli.app import app, err, stdout
from nanonet.runtimes.errors import NanonetError


def _parse_sizes(value: str) -> list[int]:
    try:
        sizes = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise NanonetError(f"--batch-sizes: expected positive integers such as 1,8,32,128, got '{value}'")
    return sizes


@app.command()
def predict(
    bundle: str = typer.Argument(..., help="A bundle directory (from nanonet export)."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify (or use --input)."),
    input: Optional[str] = typer.Option(None, "--input", help="A JSONL, CSV, TSV or text file, streamed."),
    output: Optional[str] = typer.Option(None, "--output", help="Write one JSON line per input line here (default: stdout)."),
    text_col: str = typer.Option("text", "--text-col"),
    batch_size: int = typer.Option(32, "--batch-size"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Classify texts with a bundle (no torch needed)."""
    from nanonet.runtimes import load

    if bool(texts) == bool(input):
        raise NanonetError("give texts as arguments or --input FILE (one of the two)")
    if batch_size < 1:
        raise NanonetError(f"--batch-size: must be >= 1, got {batch_size}")
    if input:
        from pathlib import Path

        from nanonet.runtimes.texts import file_kind, open_input

        open_input(Path(input)).close()  # a missing file or a directory is refused before the bundle loads
        file_kind(Path(input))
    clf = load(bundle, backend, threads)
    if texts:
        preds = clf.predict(texts, batch_size)
        truncated = clf.stats.truncated
        if as_json or output:
            lines = "".join(json.dumps({"text": t, **p.to_dict()}, ensure_ascii=False) + "\n" for t, p in zip(texts, preds))
            _emit(lines, output)
            if truncated:
                err.print(_cut(truncated, clf.max_length, len(texts)), highlight=False)
            return
        table = Table(title=f"nanonet predict: {bundle}", title_justify="left")
        for col in ("text", "label", "score"):
            table.add_column(col)
        for t, p in zip(texts, preds):
            table.add_row(escape(t if len(t) <= 80 else t[:77] + "..."), escape(p.label), f"{p.score:.3f}")
        stdout.print(table)
        if truncated:
            stdout.print(_cut(truncated, clf.max_length, len(texts)), highlight=False)
        return
    from nanonet.cli.predict_file import predict_file

    summary = predict_file(clf, input, output, text_col, batch_size, progress=output is not None, console=err)
    if as_json and output:
        stdout.print_json(json.dumps(summary))
    elif output:
        cut = f", {summary['truncated']} cut to {clf.max_length} tokens" if summary["truncated"] else ""
        stdout.print(f"{summary['predicted']} predictions, {summary['malformed']} malformed lines{cut} -> {escape(output)}")
    elif summary["truncated"]:
        err.print(_cut(summary["truncated"], clf.max_length), highlight=False)


def _cut(count: int, max_length: int, of: int | None = None) -> str:
    return f"{count}{f' of {of}' if of is not None else ''} texts were cut to the bundle's {max_length} tokens"


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        from nanonet.runtimes.fsutil import atomic_write_text

        atomic_write_text(output, text)
    else:
        sys.stdout.write(text)


@app.command()
def bench(
    bundle: str = typer.Argument(..., help="A bundle directory (from nanonet export)."),
    data: str = typer.Option(..., "--data", help="Texts to classify: a JSONL, CSV, TSV or text file."),
    text_col: str = typer.Option("text", "--text-col"),
    batch_sizes: str = typer.Option("1,8,32,128", "--batch-sizes"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime"),
    seconds: float = typer.Option(5.0, "--seconds", help="Time budget per batch size."),
    max_docs: int = typer.Option(4096, "--max-docs", help="Most documents per batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Measure a bundle: documents/s and p50/p95/p99 latency per batch size, load time, memory, size."""
    from rich.progress import Progress

    from nanonet.runtimes.benchmark import bench_bundle
    from nanonet.runtimes.texts import iter_records

    sizes = _parse_sizes(batch_sizes)
    texts = [r.text for r, _ in zip((r for r in iter_records(data, text_col) if r.text), range(max_docs))]
    if not texts:
        raise NanonetError(f"{data}: no texts to benchmark with")
    with Progress(console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("bench", total=len(sizes))
        result = bench_bundle(bundle, texts, sizes, threads, backend, seconds, max_docs, on_size=lambda b: bar.advance(task))
    if as_json:
        stdout.print_json(json.dumps(result))
        return
    table = Table(
        title=f"nanonet bench: {bundle} ({result['backend']}, {result['precision']}, threads {threads or 'default'})", title_justify="left"
    )
    for col in ("batch", "docs/s", "p50 ms", "p95 ms", "p99 ms", "overhead"):
        table.add_column(col, justify="right")
    for r in result["results"]:
        table.add_row(
            str(r["batch_size"]),
            f"{r['docs_per_second']:,.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{100 * r['overhead_share']:.1f}%",
        )
    stdout.print(table)
    stdout.print(
        f"load {result['load_seconds']:.2f}s, peak memory {result['peak_rss_mb']:.0f} MB, bundle {result['bundle_mb']:.1f} MB, "
        f"{result['texts']} texts from {escape(data)}"
    )
