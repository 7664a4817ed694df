"""nanonet: small text classifiers from very few labels, shipped to devices.

Importing the package is cheap and torch-free; the model, training and export
code live in submodules that import their heavy dependencies themselves.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nanonet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from nanonet.errors import NanonetError  # noqa: E402

__all__ = ["NanonetError", "__version__"]
