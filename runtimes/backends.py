"""Inference backends, one table: a backend turns padded numpy inputs into logits.

| backend      | runs            | needs                                  |
|--------------|-----------------|----------------------------------------|
| tensorrt     | model.plan      | tensorrt, cuda-python, a GPU           |
| onnxruntime  | model.onnx      | onnxruntime (CPU execution provider)   |

"auto" takes the first usable backend in table order.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nanonet.runtimes.bundle import Bundle
from nanonet.runtimes.errors import NanonetError


class Backend(Protocol):
    name: str
    input_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """(B, L) int64 inputs -> (B, C) float32 logits."""


def ort_options(threads: int | None = None):
    """ONNX Runtime session options for running a bundle's graph: the runtime's, and the
    quantizer's when it judges agreement, so that it judges the numbers the runtime gives.

    `session.x64quantprecision`: on x86 CPUs without VNNI (SSE4.1, AVX2, AVX-512 before
    VNNI) ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits, which
    overflow once int8 weights pass 64 in size; an int8 bundle then predicts differently
    there than on the machine that validated it. With this entry ONNX Runtime switches such
    multiplications to uint8 x uint8, which is exact, when it loads the graph; on VNNI and
    ARM CPUs, and for float graphs, it changes nothing. Measured on an AVX2 machine
    (yahoo_answers student, dynamic int8): agreement with fp32 97.15% without it, 97.65%
    with it, about 9% fewer documents per second."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return opts


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        import onnxruntime as ort

        opts = ort_options(threads)
        opts.log_severity_level = 4  # a load failure becomes one line below, not ONNX Runtime's log too
        path = bundle.file("model.onnx")
        # from the verified bytes, not the path: ONNX Runtime then reads no other file (a
        # graph that points at external weights fails to load), and reads what was hashed
        model = bundle.read_bytes("model.onnx")
        try:
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own exception types
            if "xternal data" in str(e) or "model_path must not be empty" in str(e):
                raise NanonetError(
                    f"{path}: refers to weights in another file (external data); a bundle keeps them inside model.onnx"
                ) from None
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
    from nanonet.runtimes.tensorrt import TensorRTBackend

    return TensorRTBackend(bundle, threads)


def _tensorrt_unavailable(bundle: Bundle) -> str | None:
    from nanonet.runtimes.tensorrt import unavailable

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
