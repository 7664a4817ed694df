"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Defined here, in the torch-free runtime at the bottom of the import graph, so that every
layer raises the same error; `nanonet.NanonetError` is this class."""


class NanonetError(Exception):
    """A user-facing error: bad input, a missing file, a missing extra.

    The message is a single line that names the file, row or argument at fault.
    """
