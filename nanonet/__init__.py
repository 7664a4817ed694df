"""nanonet: small text classifiers from very few labels, shipped to devices.

Importing the package is cheap: no torch, numpy or onnxruntime. The layers live in
subpackages that import their own dependencies, from the ground up:
nanonet.runtimes (torch-free inference), nanonet.calibrate, nanonet.model / data /
train (torch), nanonet.export, and the command line, nanonet.cli.
"""

__version__ = "0.1.0"

from nanonet.runtimes.errors import NanonetError  # noqa: E402

__all__ = ["NanonetError", "__version__"]
