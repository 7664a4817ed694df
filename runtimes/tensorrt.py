"""The TensorRT backend: a bundle's `model.plan` run on packed tokens through cuda-python
(no torch). The host checks `cu_seqlens` before every run: a varlen kernel reads and
writes through those offsets, so a bad one is a memory error on the device, not a
wrong answer.

The checks and the packing run anywhere (and are tested here); running an engine needs
TensorRT, cuda-python and a GPU.
"""

from __future__ import annotations

import ctypes
import importlib.util

import numpy as np

from nanonet.runtimes.bundle import Bundle
from nanonet.runtimes.errors import NanonetError


def check_cu_seqlens(cu_seqlens: np.ndarray, num_tokens: int, max_seqlen: int | None = None, max_batch: int | None = None) -> None:
    """Refuse offsets a varlen kernel must never see: not int32 1-D, not starting at 0,
    not strictly increasing, not ending at the token count, a sequence over the profile."""
    cu = np.asarray(cu_seqlens)
    if cu.dtype != np.int32 or cu.ndim != 1 or cu.size < 2:
        raise NanonetError(f"cu_seqlens: expected a 1-D int32 array of B+1 >= 2 offsets, got {cu.dtype} of shape {cu.shape}")
    if cu[0] != 0:
        raise NanonetError(f"cu_seqlens: must start at 0, starts at {int(cu[0])}")
    steps = np.diff(cu.astype(np.int64))
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise NanonetError(f"cu_seqlens: must increase at every step, goes {int(cu[i])} -> {int(cu[i + 1])} at index {i}")
    if cu[-1] != num_tokens:
        raise NanonetError(f"cu_seqlens: ends at {int(cu[-1])}, but the batch has {num_tokens} tokens")
    if max_seqlen is not None and steps.max() > max_seqlen:
        raise NanonetError(f"cu_seqlens: a sequence of {int(steps.max())} tokens exceeds the engine's profile ({max_seqlen})")
    if max_batch is not None and cu.size - 1 > max_batch:
        raise NanonetError(f"cu_seqlens: {cu.size - 1} sequences exceed the engine's profile ({max_batch})")


def pack(feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """Padded (B, L) input_ids/attention_mask -> (input_ids [T] int32, cu_seqlens [B+1] int32, max_seqlen)."""
    mask = feeds["attention_mask"].astype(bool)
    lengths = mask.sum(1)
    cu = np.zeros(len(lengths) + 1, dtype=np.int32)
    cu[1:] = np.cumsum(lengths)
    return feeds["input_ids"][mask].astype(np.int32), cu, int(lengths.max())


def unavailable(bundle: Bundle) -> str | None:
    if "model.plan" not in bundle.manifest.files:
        return "the bundle has no model.plan (build one on the device: nanonet engine BUNDLE)"
    if engine_facts(bundle).get("plugin") == "jit":
        return (
            "its model.plan was built with the JIT attention plugin, which runs in Python and torch inside the builder's "
            "process; rebuild it with the AOT plugin for this runtime: nanonet engine BUNDLE"
        )
    for module, pip in (("tensorrt", "tensorrt"), ("cuda", "cuda-python")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {pip})"
    if cuda_devices() == 0:
        return "no CUDA device here (the CUDA driver reports none)"
    return None


def engine_facts(bundle: Bundle) -> dict:
    """What the engine builder recorded in the manifest (TensorRT version, plugin, profile)."""
    return dict(bundle.manifest.export.get("tensorrt", {}).get("engine", {}))


def cuda_devices() -> int:
    """How many CUDA devices the driver reports here (0 without cuda-python, a driver or a GPU)."""
    try:
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        return int(count) if int(err) == 0 else 0
    except Exception:  # noqa: BLE001 - no cuda-python, no driver: no device
        return 0


def _checked(cudart, result, call: str):
    """cuda-python returns (error, *values): a one-line error unless the call succeeded."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = cudart.cudaGetErrorName(err)[1]
        raise NanonetError(f"CUDA: {call} failed ({name.decode() if isinstance(name, bytes) else name})")
    return values[0] if len(values) == 1 else None


BUFFERS = (("input_ids", np.int32), ("cu_seqlens", np.int32), ("max_seqlen", np.int32), ("logits", np.float32))


class EngineRunner:
    """A deserialized engine with its stream, and device and pinned host buffers allocated
    once for the profile's maximum batch and reused by every call; every CUDA and TensorRT
    call is checked. `trt` and `cudart` default to TensorRT and cuda-python's runtime."""

    def __init__(self, plan: bytes, profile: dict, where: str = "model.plan", trt=None, cudart=None):
        if trt is None:
            import tensorrt as trt
        if cudart is None:
            from cuda.bindings import runtime as cudart
        self.cudart, self.where = cudart, where
        self.device: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}
        self.stream = None
        missing = [k for k in ("max_tokens", "max_batch", "max_seqlen") if k not in profile]
        if missing:
            raise NanonetError(f"{where}: the manifest's engine profile lacks {', '.join(missing)}; rebuild it: nanonet engine BUNDLE")
        self.max_tokens, self.max_batch, self.max_seqlen = (int(profile[k]) for k in ("max_tokens", "max_batch", "max_seqlen"))
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise NanonetError(f"{where}: TensorRT cannot deserialize it (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise NanonetError(f"{where}: TensorRT cannot create an execution context (out of GPU memory?)")
        self.num_labels = int(self.engine.get_tensor_shape("logits")[-1])
        self.stream = _checked(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        sizes = {"input_ids": self.max_tokens, "cu_seqlens": self.max_batch + 1, "max_seqlen": self.max_seqlen}
        sizes["logits"] = self.max_batch * self.num_labels
        try:
            for name, dtype in BUFFERS:
                nbytes = sizes[name] * np.dtype(dtype).itemsize
                self.device[name] = _checked(cudart, cudart.cudaMalloc(nbytes), f"cudaMalloc of {nbytes} bytes for {name}")
                pinned = _checked(cudart, cudart.cudaMallocHost(nbytes), f"cudaMallocHost of {nbytes} bytes for {name}")
                self.host[name] = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(pinned))).view(dtype)
                if not self.context.set_tensor_address(name, self.device[name]):
                    raise NanonetError(f"{where}: TensorRT refused the device address of '{name}' (not a tensor of this engine?)")
        except BaseException:
            self.close()
            raise

    def run(self, input_ids: np.ndarray, cu_seqlens: np.ndarray, max_seqlen: int) -> np.ndarray:
        """Logits [B, C] (float32) of one packed batch."""
        check_cu_seqlens(cu_seqlens, input_ids.size, self.max_seqlen, self.max_batch)
        if input_ids.size > self.max_tokens:
            raise NanonetError(f"input_ids: {input_ids.size} tokens exceed the engine's profile ({self.max_tokens})")
        cudart, ctx, batch = self.cudart, self.context, cu_seqlens.size - 1
        # max_seqlen is read by its shape, not its values: nothing of it is copied
        shapes = {"input_ids": (input_ids.size,), "cu_seqlens": (batch + 1,), "max_seqlen": (int(max_seqlen),)}
        for name, shape in shapes.items():
            if not ctx.set_input_shape(name, shape):
                raise NanonetError(f"{self.where}: TensorRT refused the shape {shape} for '{name}' (outside the engine's profile?)")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, values in (("input_ids", input_ids), ("cu_seqlens", cu_seqlens)):
            staged = self.host[name][: values.size]
            staged[:] = values
            call = f"cudaMemcpyAsync of {name} to the device"
            _checked(cudart, cudart.cudaMemcpyAsync(self.device[name], staged.ctypes.data, staged.nbytes, h2d, self.stream), call)
        if not ctx.execute_async_v3(self.stream):
            raise NanonetError(f"{self.where}: TensorRT could not run the engine on a batch of {batch} sequences")
        out = self.host["logits"][: batch * self.num_labels]
        _checked(
            cudart,
            cudart.cudaMemcpyAsync(out.ctypes.data, self.device["logits"], out.nbytes, d2h, self.stream),
            "cudaMemcpyAsync of logits",
        )
        _checked(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return out.reshape(batch, self.num_labels).copy()

    def close(self) -> None:
        """Free the buffers and the stream (errors here cannot be acted on, so they are not raised)."""
        cudart = self.cudart
        for name in list(self.host):
            cudart.cudaFreeHost(self.host.pop(name).ctypes.data)
        for name in list(self.device):
            cudart.cudaFree(self.device.pop(name))
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self):
        if hasattr(self, "host"):
            self.close()


class TensorRTBackend:
    """A bundle's model.plan behind the backend interface: padded feeds are packed, then run."""

    name = "tensorrt"
    input_names = ["input_ids", "attention_mask"]

    def __init__(self, bundle: Bundle, threads: int | None = None):
        # an AOT plan carries its attention kernels: nothing to register in this process
        plan = bundle.file("model.plan")
        self.runner = EngineRunner(bundle.read_bytes("model.plan"), engine_facts(bundle).get("profile", {}), str(plan))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids, cu, longest = pack(feeds)
        return self.runner.run(ids, cu, longest)
