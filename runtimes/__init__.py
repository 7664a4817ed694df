"""Torch-free inference for nanonet bundles.

A device installs numpy, tokenizers and onnxruntime and nothing more, so this package
imports none of nanonet's other packages and never torch. The bundle format (reading
and writing) and the backends (ONNX Runtime on CPUs, TensorRT on GPUs) live here.
"""

RUNTIME_DEPENDENCIES = ("numpy", "tokenizers", "onnxruntime")

__all__ = ["RUNTIME_DEPENDENCIES"]
