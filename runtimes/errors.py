"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Defined here, in the torch-free runtime, so that bundles and backends raise the same
error as nanonet's core (which re-exports it as nanonet.errors.NanonetError)."""


class NanonetError(Exception):
    """A user-facing error: bad input, a missing file, a missing extra.

    The message is a single line that names the file, row or argument at fault.
    """
