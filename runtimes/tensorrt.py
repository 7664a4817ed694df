"""The TensorRT backend: a bundle's `model.plan` run on packed tokens through cuda-python
(no torch). The host checks `cu_seqlens` before every run: a varlen kernel reads and
writes through those offsets, so a bad one is a memory error on the device, not a
wrong answer.

The checks and the packing run anywhere (and are tested here); running an engine needs
TensorRT, cuda-python and a GPU.
"""

from __future__ import annotations

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
    return None


def engine_facts(bundle: Bundle) -> dict:
    """What the engine builder recorded in the manifest (TensorRT version, plugin, profile)."""
    return dict(bundle.manifest.export.get("tensorrt", {}).get("engine", {}))


class TensorRTBackend:
    """Deserialize the plan once; per call: pack, check, copy in, execute, copy out."""

    name = "tensorrt"
    input_names = ["input_ids", "attention_mask"]

    def __init__(self, bundle: Bundle, threads: int | None = None):
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        # an AOT plan carries its attention kernels: nothing to register in this process
        self.trt, self.cudart = trt, cudart
        self.profile = dict(engine_facts(bundle).get("profile", {}))
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(bundle.file("model.plan").read_bytes())
        if self.engine is None:
            raise NanonetError(f"{bundle.file('model.plan')}: TensorRT cannot deserialize it (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        _, self.stream = cudart.cudaStreamCreate()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids, cu, longest = pack(feeds)
        check_cu_seqlens(cu, ids.size, self.profile.get("max_seqlen"), self.profile.get("max_batch"))
        cudart, ctx = self.cudart, self.context
        host = {"input_ids": ids, "cu_seqlens": cu, "max_seqlen": np.zeros(longest, dtype=np.int32)}
        out = np.empty((cu.size - 1, self.engine.get_tensor_shape("logits")[-1]), dtype=np.float32)
        buffers = []
        try:
            for name, arr in list(host.items()) + [("logits", out)]:
                _, ptr = cudart.cudaMalloc(max(arr.nbytes, 1))
                buffers.append(ptr)
                ctx.set_tensor_address(name, ptr)
                if name != "logits":
                    ctx.set_input_shape(name, arr.shape)
                    cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
            if not ctx.execute_async_v3(self.stream):
                raise NanonetError("TensorRT: execution failed")
            cudart.cudaMemcpyAsync(out.ctypes.data, buffers[-1], out.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
            cudart.cudaStreamSynchronize(self.stream)
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)
        return out
