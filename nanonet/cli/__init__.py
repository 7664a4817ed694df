"""The `nanonet` command line (Typer): the top layer, which nothing else imports.

One module per command group (info; train and eval; export and engine; predict and
bench; quantize and validate). Each command imports what it needs inside its body, so
`nanonet --help` and the torch-free commands work on a device that has only the base
install, and a command whose extra is missing says which `pip install` fixes it.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from nanonet.cli.app import app, err
from nanonet.runtimes.errors import NanonetError

# Importing a command module registers its commands; `--help` lists them in this order.
# isort: off
from nanonet.cli import info, select, train, export, predict, quantize  # noqa: E402, F401
# isort: on

__all__ = ["app", "main"]


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds, so work directories and temporary files are removed


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    try:
        app()
    except NanonetError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
