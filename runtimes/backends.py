"""Inference backends, one table: a backend turns padded numpy inputs into logits.

| backend      | runs            | needs                                  |
|--------------|-----------------|----------------------------------------|
| tensorrt     | model.plan      | tensorrt, cuda-python, a GPU           |
| onnxruntime  | model.onnx      | onnxruntime (CPU execution provider)   |

"auto" takes the first usable backend in table order.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from runtimes.bundle import Bundle
from runtimes.errors import NanonetError


class Backend(Protocol):
    name: str
    input_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """(B, L) int64 inputs -> (B, C) float32 logits."""


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        path = bundle.file("model.onnx")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own exception types
            raise NanonetError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {n: feeds[n] for n in self.input_names})[0]


@dataclass(frozen=True)
class BackendEntry:
    name: str
    factory: Callable[[Bundle, int | None], Backend]
    # None when usable with this bundle on this machine, else why not
    unavailable: Callable[[Bundle], str | None]


def _ort_unavailable(bundle: Bundle) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if "model.onnx" not in bundle.manifest.files:
        return "the bundle has no model.onnx"
    return None


def _tensorrt(bundle: Bundle, threads: int | None) -> Backend:
    from runtimes.tensorrt import TensorRTBackend

    return TensorRTBackend(bundle, threads)


def _tensorrt_unavailable(bundle: Bundle) -> str | None:
    from runtimes.tensorrt import unavailable

    return unavailable(bundle)


# "auto" tries these in order: a TensorRT engine when the bundle has one and TensorRT runs here
BACKENDS: dict[str, BackendEntry] = {
    "tensorrt": BackendEntry("tensorrt", _tensorrt, _tensorrt_unavailable),
    "onnxruntime": BackendEntry("onnxruntime", OnnxRuntimeBackend, _ort_unavailable),
}


def open_backend(bundle: Bundle, name: str = "auto", threads: int | None = None) -> Backend:
    if name == "auto":
        reasons = []
        for entry in BACKENDS.values():
            why = entry.unavailable(bundle)
            if why is None:
                return entry.factory(bundle, threads)
            reasons.append(f"{entry.name}: {why}")
        raise NanonetError(f"{bundle.path}: no backend can run this bundle ({'; '.join(reasons)})")
    if name not in BACKENDS:
        raise NanonetError(f"--backend: unknown backend '{name}' (known: auto, {', '.join(BACKENDS)})")
    why = BACKENDS[name].unavailable(bundle)
    if why:
        raise NanonetError(f"--backend {name}: {why}")
    return BACKENDS[name].factory(bundle, threads)
