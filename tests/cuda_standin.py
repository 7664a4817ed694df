"""Stand-ins for cuda-python's runtime module and a TensorRT engine, on host memory.

`Cudart` keeps "device" buffers in host memory and copies with memmove, and returns the
error code a test asks for from a chosen call. `Engine` reads its input tensors from the
addresses and shapes the runner gave its context and writes, per sequence, logits
(sum of its token ids, its length, its index), so a test can tell whether the runner
copied and sliced the right bytes.
"""

from __future__ import annotations

import ctypes
import enum
from types import SimpleNamespace

import numpy as np

cudaError_t = enum.IntEnum("cudaError_t", {"cudaSuccess": 0, "cudaErrorMemoryAllocation": 2, "cudaErrorIllegalAddress": 700})


class Cudart:
    cudaMemcpyKind = enum.IntEnum("cudaMemcpyKind", {"cudaMemcpyHostToDevice": 1, "cudaMemcpyDeviceToHost": 2})

    def __init__(self, fail: dict[str, cudaError_t] | None = None, devices: int = 1):
        self.fail = dict(fail or {})
        self.devices = devices
        self.live: dict[int, ctypes.Array] = {}  # address -> buffer, device and pinned alike
        self.calls: list[str] = []

    def _result(self, call: str, *values):
        self.calls.append(call)
        return (self.fail.get(call, cudaError_t.cudaSuccess), *values)

    def _alloc(self, call: str, nbytes: int):
        if call in self.fail:
            return self._result(call, 0)
        buf = (ctypes.c_byte * nbytes)()
        self.live[ctypes.addressof(buf)] = buf
        return self._result(call, ctypes.addressof(buf))

    def cudaMalloc(self, nbytes):
        return self._alloc("cudaMalloc", nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc("cudaMallocHost", nbytes)

    def cudaFree(self, ptr):
        self.live.pop(int(ptr))
        return self._result("cudaFree")

    cudaFreeHost = cudaFree

    def cudaStreamCreate(self):
        return self._result("cudaStreamCreate", "stream")

    def cudaStreamDestroy(self, stream):
        return self._result("cudaStreamDestroy")

    def cudaStreamSynchronize(self, stream):
        return self._result("cudaStreamSynchronize")

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        if "cudaMemcpyAsync" not in self.fail:
            ctypes.memmove(int(dst), int(src), int(nbytes))
        return self._result("cudaMemcpyAsync")

    def cudaGetErrorName(self, err):
        return (cudaError_t.cudaSuccess, cudaError_t(err).name.encode())

    def cudaGetDeviceCount(self):
        return self._result("cudaGetDeviceCount", self.devices)


def _read(address: int, dtype, count: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(address)).view(dtype)


class Context:
    def __init__(self, engine: Engine):
        self.engine, self.addresses, self.shapes = engine, {}, {}

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)
        return True

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return not (name == "input_ids" and shape[0] > self.engine.refuse_tokens_over)

    def execute_async_v3(self, stream):
        if not self.engine.executes:
            return False
        (tokens,), (offsets,) = self.shapes["input_ids"], self.shapes["cu_seqlens"]
        ids = _read(self.addresses["input_ids"], np.int32, tokens)
        cu = _read(self.addresses["cu_seqlens"], np.int32, offsets)
        out = _read(self.addresses["logits"], np.float32, (offsets - 1) * 3).reshape(offsets - 1, 3)
        for b, (s, e) in enumerate(zip(cu[:-1], cu[1:])):
            out[b] = (ids[s:e].sum(), e - s, b)
        return True


class Engine:
    def __init__(self, refuse_tokens_over: int = 10**9, executes: bool = True):
        self.refuse_tokens_over, self.executes = refuse_tokens_over, executes

    def get_tensor_shape(self, name):
        assert name == "logits"
        return (-1, 3)

    def create_execution_context(self):
        return Context(self)


def tensorrt(engine: Engine | None) -> SimpleNamespace:
    """A `tensorrt` module whose runtime deserializes any plan to `engine` (None: it cannot)."""
    logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=None: None})
    runtime = type("Runtime", (), {"__init__": lambda self, logger: None, "deserialize_cuda_engine": lambda self, plan: engine})
    return SimpleNamespace(Logger=logger, Runtime=runtime)
