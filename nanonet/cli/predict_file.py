"""`nanonet predict --input FILE`: stream a file through a classifier, one JSON line out per
input line, in chunks, so a file of any size runs in bounded memory.

Malformed lines (bad JSON, a missing column, empty text) get an `error` line in the output
and a warning, and the run goes on. The output is written to a temporary file and renamed
at the end, so an interrupted run leaves any earlier output untouched."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from nanonet.runtimes.classifier import Classifier
from nanonet.runtimes.texts import Record, iter_records

CHUNK = 1024  # texts in memory at a time
SHOWN_WARNINGS = 5


def predict_file(
    clf: Classifier,
    input: str,
    output: str | None,
    text_col: str = "text",
    batch_size: int = 32,
    progress: bool = True,
    console: Console | None = None,
) -> dict:
    console = console or Console(stderr=True, soft_wrap=True)
    total = os.path.getsize(input) if Path(input).is_file() else 0
    summary = {"input": input, "output": output, "lines": 0, "predicted": 0, "malformed": 0, "truncated": 0}
    truncated_before = clf.stats.truncated

    def flush(chunk: list[Record], out) -> None:
        good = [r for r in chunk if r.error is None]
        preds = iter(clf.predict([r.text for r in good], batch_size)) if good else iter(())
        for r in chunk:
            if r.error is None:
                row = {"line": r.line, **next(preds).to_dict()}
                summary["predicted"] += 1
            else:
                row = {"line": r.line, "error": r.error}
                summary["malformed"] += 1
                if summary["malformed"] <= SHOWN_WARNINGS:
                    console.print(f"[yellow]warning:[/] {escape(input)}: line {r.line}: {escape(r.error)}; skipped", highlight=False)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        summary["lines"] += len(chunk)

    def run(out, advance) -> None:
        chunk: list[Record] = []
        for rec in iter_records(input, text_col, progress=advance):
            chunk.append(rec)
            if len(chunk) == CHUNK:
                flush(chunk, out)
                chunk = []
        if chunk:
            flush(chunk, out)

    if output is None:
        run(sys.stdout, None)
    else:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        target = Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with (
                open(tmp, "w", encoding="utf-8") as out,
                Progress(
                    TextColumn("[bold]predict"),
                    BarColumn(),
                    DownloadColumn(),
                    TimeRemainingColumn(),
                    console=console,
                    transient=True,
                    disable=not progress,
                ) as bar,
            ):
                task = bar.add_task("predict", total=total)
                run(out, lambda done: bar.update(task, completed=done))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    if summary["malformed"] > SHOWN_WARNINGS:
        console.print(f"[yellow]warning:[/] {summary['malformed']} malformed lines in all (each has an error line in the output)")
    summary["truncated"] = clf.stats.truncated - truncated_before
    return summary
