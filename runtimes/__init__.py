"""Torch-free inference for nanonet bundles.

A device installs numpy, tokenizers and onnxruntime and nothing more, so this package
imports none of nanonet's other packages and never torch. The bundle format (reading and
writing) and the backends (ONNX Runtime on CPUs; TensorRT on GPUs) live here, and so do
the pieces every layer shares: the error type (`errors`) and atomic writes (`fsutil`).

    >>> from nanonet import runtimes
    >>> clf = runtimes.load("bundle/", threads=2)
    >>> clf.predict(["Stocks rallied after the Fed's decision."])
    [Prediction(label=..., score=..., scores={...})]

The names below are imported on first use, so `import nanonet` (which needs the error
type) loads neither numpy nor onnxruntime.
"""

from __future__ import annotations

import importlib

from nanonet.runtimes.errors import NanonetError

RUNTIME_DEPENDENCIES = ("numpy", "tokenizers", "onnxruntime")

_LAZY = {
    "Bundle": "bundle",
    "Manifest": "bundle",
    "read_bundle": "bundle",
    "write_bundle": "bundle",
    "Classifier": "classifier",
    "Prediction": "classifier",
    "load": "classifier",
}

__all__ = ["RUNTIME_DEPENDENCIES", "NanonetError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'nanonet.runtimes' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"nanonet.runtimes.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
