"""The Typer application, its two consoles and the small parsers the commands share.

Command modules register on `app`; `nanonet.cli` imports them in the order `--help` lists them.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from nanonet import __version__
from nanonet.runtimes.errors import NanonetError

app = typer.Typer(
    name="nanonet",
    help="Train small text classifiers from very few labels and ship them to devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
# Warnings and errors stay one line each whatever the terminal width: scripts grep them.
err = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"nanonet {__version__}")
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


def pct(x: Optional[float]) -> str:
    """A fraction as a percentage with one decimal, '-' when missing."""
    return "-" if x is None else f"{100 * x:.1f}"
