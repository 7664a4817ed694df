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
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"nanonet {__version__}")
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
        out.print_json(json.dumps(facts))
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
    out.print(table)


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
