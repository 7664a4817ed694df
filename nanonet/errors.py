"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class NanonetError(Exception):
    """A user-facing error: bad input, a missing file, a missing extra.

    The message is a single line that names the file, row or argument at fault.
    """
