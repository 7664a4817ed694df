"""`nanonet info`: describe a model."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nanonet.cli.app import app, parse_layers, stdout


@app.command()
def info(
    model: str = typer.Argument(
        ..., help="A nanonet checkpoint, a Hugging Face checkpoint directory or hub id, or 'sentence-transformers/all-MiniLM-L6-v2'."
    ),
    layers: Optional[str] = typer.Option(None, "--layers", help="Describe the student made of these layers, e.g. 0,2,4."),
    global_every: Optional[int] = typer.Option(None, "--global-every", help="Make every N-th layer global and the others local."),
    local_window: Optional[int] = typer.Option(None, "--local-window", help="Tokens in a local layer's window (both sides together)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a model: family, layers, sizes, attention pattern, parameters, backend."""
    from nanonet.model.describe import describe_model

    facts = describe_model(model, parse_layers(layers), global_every, local_window)
    if as_json:
        stdout.print_json(json.dumps(facts))
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
    stdout.print(table)
