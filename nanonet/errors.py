"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from runtimes.errors import NanonetError

__all__ = ["NanonetError"]
