"""Torch-free inference for nanonet bundles.

A device installs numpy, tokenizers and onnxruntime and nothing more, so this package
imports none of nanonet's other packages and never torch. The bundle format (reading and
writing) and the backends (ONNX Runtime on CPUs; TensorRT on GPUs) live here.

    import runtimes
    clf = runtimes.load("bundle/", threads=2)
    clf.predict(["Stocks rallied after the Fed's decision."])  # [Prediction(label=..., score=...)]
"""

from runtimes.bundle import Bundle, Manifest, read_bundle, write_bundle
from runtimes.classifier import Classifier, Prediction, load
from runtimes.errors import NanonetError

RUNTIME_DEPENDENCIES = ("numpy", "tokenizers", "onnxruntime")

__all__ = ["RUNTIME_DEPENDENCIES", "Bundle", "Classifier", "Manifest", "NanonetError", "Prediction", "load", "read_bundle",
           "write_bundle"]  # fmt: skip
