"""The `nanonet` command line (Typer).

Each command imports what it needs inside its body, so `nanonet --help` and the
torch-free commands work on a device that has only the base install, and a command
whose extra is missing says which `pip install` fixes it.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nanonet import __version__
from nanonet.errors import NanonetError

app = typer.Typer(
    name="nanonet",
    help="Train small text classifiers from very few labels and ship them to devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"nanonet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def parse_layers(value: Optional[str]) -> Optional[list[int]]:
    """'0,2,4' -> [0, 2, 4]."""
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip() != ""]
    except ValueError:
        raise NanonetError(f"--layers: expected comma-separated layer numbers such as 0,2,4, got '{value}'") from None


@app.command()
def info(
    model: str = typer.Argument(..., help="A nanonet checkpoint, a Hugging Face checkpoint directory or hub id, or 'sentence-transformers/all-MiniLM-L6-v2'."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Describe the student made of these layers, e.g. 0,2,4."),
    global_every: Optional[int] = typer.Option(None, "--global-every", help="Make every N-th layer global and the others local."),
    local_window: Optional[int] = typer.Option(None, "--local-window", help="Tokens in a local layer's window (both sides together)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a model: family, layers, sizes, attention pattern, parameters, backend."""
    from nanonet.model.describe import describe_model

    facts = describe_model(model, parse_layers(layers), global_every, local_window)
    if as_json:
        out_console.print_json(json.dumps(facts))
        return
    table = Table(title=f"nanonet info: {model}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in facts.items():
        if key == "attention":
            value = "  ".join(f"{a['layer']}:{a['type']}" + (f"({a['window']})" if a["type"] == "local" else "") for a in value)
        elif key == "backends":
            value = "\n".join(f"{b['device']}/{b['dtype']}: {b['backend']}" for b in value)
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), escape(str(value)))
    out_console.print(table)


def _layer_sets(value: Optional[str]) -> Optional[list[list[int]]]:
    """'0,2,4/1,3,5' -> [[0, 2, 4], [1, 3, 5]]."""
    if value is None:
        return None
    return [parse_layers(part) or [] for part in value.split("/")]


@app.command()
def train(
    data: str = typer.Option(..., "--data", help="Directory with train/dev/test files, a train file, or a datasets name."),
    out: str = typer.Option(..., "--out", help="Run directory (student/, teacher/, report.json)."),
    labels_per_class: int = typer.Option(10, "--labels-per-class", help="N labeled examples drawn per class."),
    seed: int = typer.Option(1, "--seed"),
    teacher: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--teacher", help="Teacher checkpoint, hub id or the default."),
    unlabeled: list[str] = typer.Option([], "--unlabeled", help="Extra unlabeled text file (repeatable)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    students: int = typer.Option(2, "--students", help="K students in the cohort."),
    student_layers: Optional[str] = typer.Option(None, "--student-layers", help="Teacher layers per student, e.g. 0,2,4/1,3,5."),
    trainable: str = typer.Option("bias", "--trainable", help="bias | bias+norm | all"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: --epochs over the unlabeled pool)."),
    epochs: float = typer.Option(2.0, "--epochs", help="Passes over the unlabeled pool when --steps is not given."),
    eval_every: int = typer.Option(25, "--eval-every", help="Dev evaluation and resume state every M steps."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Encoder learning rate (default 3e-3 for bias, 5e-5 for all)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last saved state."),
    attention: str = typer.Option("auto", "--attention", help="auto | flash | torch_varlen | sdpa | reference"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Distil a teacher into a cohort of students from N labels per class (NanoNet)."""
    from nanonet.train import TrainArgs, train as run

    args = TrainArgs(
        data=data, out=out, labels_per_class=labels_per_class, seed=seed, teacher=teacher, unlabeled=list(unlabeled),
        text_col=text_col, label_col=label_col, students=students, student_layers=_layer_sets(student_layers),
        trainable=trainable, steps=steps, epochs=epochs, eval_every=eval_every, lr=lr, resume=resume,
        attention=attention, threads=threads,
    )  # fmt: skip
    try:
        report = run(args, progress=not as_json)
    except KeyboardInterrupt:
        raise NanonetError(f"interrupted; continue with the same command plus --resume (state in {out}/state)") from None
    if as_json:
        out_console.print_json(json.dumps({k: v for k, v in report.items() if k != "history"}))
        return
    _print_train_report(report, out)


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _print_train_report(report: dict, out: str) -> None:
    table = Table(title=f"nanonet train: {report['settings']['data']}, {report['settings']['labels_per_class']} labels per class, seed {report['settings']['seed']}", title_justify="left")
    for col in ("model", "layers", "view", "dev acc / F1", "test acc / F1", "trainable / total"):
        table.add_column(col, no_wrap=True)
    chosen = report["chosen_student"]
    for i, r in enumerate([report["teacher"], *report["students"]]):
        name = r["name"] + (" *" if i - 1 == chosen else "")
        table.add_row(name, ",".join(map(str, r["layers"])), r["view"] or "-",
                      f"{_pct(r['dev']['accuracy'])} / {_pct(r['dev']['macro_f1'])}",
                      f"{_pct(r['test']['accuracy'])} / {_pct(r['test']['macro_f1'])}",
                      f"{r['trainable_parameters'] / 1e3:,.1f}K / {r['parameters'] / 1e6:,.1f}M")  # fmt: skip
    table.caption = "* the chosen student (best dev accuracy), saved to RUN/student"
    out_console.print(table)
    t, d = report["training"], report["data"]
    out_console.print(
        f"{t['steps']} steps in {t['seconds']:.0f}s, {t['tokens_per_second']:,.0f} tokens/s, {100 * t['padding_avoided']:.0f}% padding avoided; "
        f"{d['labeled']} labeled, {d['unlabeled']} unlabeled, dev {d['dev']} ({d['dev_source']}), test {d['test']}"
    )
    out_console.print(f"student: {out}/student  teacher: {out}/teacher  report: {out}/report.json")


@app.command("eval")
def evaluate_command(
    checkpoint: str = typer.Argument(..., help="A nanonet checkpoint directory (e.g. RUN/student)."),
    data: str = typer.Option(..., "--data", help="A labeled file (JSONL, CSV, TSV, Parquet)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Evaluate a checkpoint on a labeled file: accuracy, macro-F1, per-class accuracy."""
    from nanonet.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data, text_col, label_col)
    if as_json:
        out_console.print_json(json.dumps(result))
        return
    table = Table(title=f"nanonet eval: {checkpoint} on {data} ({result['n']} examples)", title_justify="left")
    table.add_column("class")
    table.add_column("n")
    table.add_column("accuracy")
    for name, row in result["per_class"].items():
        table.add_row(escape(name), str(row["n"]), _pct(row["accuracy"]))
    table.add_row("[bold]all", str(result["n"]), f"[bold]{_pct(result['accuracy'])}[/] (macro-F1 {_pct(result['macro_f1'])})")
    out_console.print(table)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except NanonetError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
