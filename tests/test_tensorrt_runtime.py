"""The TensorRT runtime's host side on a CPU: buffers allocated once and reused, the right
bytes copied each way, every CUDA and TensorRT failure a one-line error, and `auto` taking
TensorRT only where a CUDA device is. The engine and cuda-python are stand-ins
(tests/cuda_standin.py); the real ones run in tests/test_tensorrt_graph.py (marked tensorrt)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from cuda_standin import Cudart, Engine, cudaError_t, tensorrt

from nanonet.runtimes import tensorrt as trt_runtime
from nanonet.runtimes.bundle import Bundle, Manifest
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.tensorrt import EngineRunner

PROFILE = {"max_tokens": 64, "max_batch": 4, "max_seqlen": 32}


def _batch(lengths, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 1000, sum(lengths)).astype(np.int32)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return ids, cu, max(lengths)


def test_buffers_are_allocated_once_and_each_call_reads_only_its_own_batch():
    cudart = Cudart()
    runner = EngineRunner(b"plan", PROFILE, trt=tensorrt(Engine()), cudart=cudart)
    allocations = cudart.calls.count("cudaMalloc"), cudart.calls.count("cudaMallocHost")
    for lengths, seed in (([5, 30, 2, 9], 0), ([3, 1], 1), ([32, 32], 2)):  # the second batch is smaller than the first
        ids, cu, longest = _batch(lengths, seed)
        got = runner.run(ids, cu, longest)
        want = [(ids[s:e].sum(), e - s, b) for b, (s, e) in enumerate(zip(cu[:-1], cu[1:]))]
        np.testing.assert_array_equal(got, np.array(want, dtype=np.float32))
    assert allocations == (4, 4)  # input_ids, cu_seqlens, max_seqlen, logits: device and pinned host
    assert (cudart.calls.count("cudaMalloc"), cudart.calls.count("cudaMallocHost")) == allocations
    runner.close()
    assert cudart.live == {}  # every buffer freed


@pytest.mark.parametrize(
    "fail, message",
    [
        ({"cudaStreamCreate": cudaError_t.cudaErrorMemoryAllocation}, r"^CUDA: cudaStreamCreate failed \(cudaErrorMemoryAllocation\)$"),
        ({"cudaMalloc": cudaError_t.cudaErrorMemoryAllocation}, r"^CUDA: cudaMalloc of 256 bytes for input_ids failed"),
        ({"cudaMallocHost": cudaError_t.cudaErrorMemoryAllocation}, r"^CUDA: cudaMallocHost of 256 bytes for input_ids failed"),
    ],
)
def test_a_failed_allocation_is_one_line_and_frees_what_was_allocated(fail, message):
    cudart = Cudart(fail)
    with pytest.raises(NanonetError, match=message):
        EngineRunner(b"plan", PROFILE, trt=tensorrt(Engine()), cudart=cudart)
    assert cudart.live == {}


@pytest.mark.parametrize(
    "fail, message",
    [
        (
            {"cudaMemcpyAsync": cudaError_t.cudaErrorIllegalAddress},
            r"^CUDA: cudaMemcpyAsync of input_ids to the device failed \(cudaErrorIllegalAddress\)$",
        ),
        (
            {"cudaStreamSynchronize": cudaError_t.cudaErrorIllegalAddress},
            r"^CUDA: cudaStreamSynchronize failed \(cudaErrorIllegalAddress\)$",
        ),
    ],
)
def test_a_failed_copy_or_synchronize_is_one_line(fail, message):
    runner = EngineRunner(b"plan", PROFILE, trt=tensorrt(Engine()), cudart=Cudart(fail))
    with pytest.raises(NanonetError, match=message):
        runner.run(*_batch([4, 2], 0))


def test_tensorrt_refusals_are_one_line():
    runner = EngineRunner(b"plan", PROFILE, "b/model.plan", trt=tensorrt(Engine(refuse_tokens_over=5)), cudart=Cudart())
    with pytest.raises(NanonetError, match=r"^b/model.plan: TensorRT refused the shape \(6,\) for 'input_ids'"):
        runner.run(*_batch([4, 2], 0))
    runner = EngineRunner(b"plan", PROFILE, "b/model.plan", trt=tensorrt(Engine(executes=False)), cudart=Cudart())
    with pytest.raises(NanonetError, match=r"^b/model.plan: TensorRT could not run the engine on a batch of 2 sequences$"):
        runner.run(*_batch([4, 2], 0))
    with pytest.raises(NanonetError, match=r"^b/model.plan: TensorRT cannot deserialize it"):
        EngineRunner(b"plan", PROFILE, "b/model.plan", trt=tensorrt(None), cudart=Cudart())


def test_batches_over_the_profile_never_reach_the_device():
    cudart = Cudart()
    runner = EngineRunner(b"plan", PROFILE, trt=tensorrt(Engine()), cudart=cudart)
    before = len(cudart.calls)
    with pytest.raises(NanonetError, match="5 sequences exceed the engine's profile"):
        runner.run(*_batch([1, 1, 1, 1, 1], 0))
    with pytest.raises(NanonetError, match="exceeds the engine's profile"):
        runner.run(*_batch([33], 0))
    with pytest.raises(NanonetError, match="65 tokens exceed the engine's profile"):
        runner.run(*_batch([32, 32, 1], 0))
    assert len(cudart.calls) == before  # no copy, no launch


def test_a_manifest_without_the_profile_is_refused():
    with pytest.raises(NanonetError, match="the manifest's engine profile lacks max_tokens, max_batch, max_seqlen"):
        EngineRunner(b"plan", {}, trt=tensorrt(Engine()), cudart=Cudart())


def _plan_bundle(tmp_path) -> Bundle:
    manifest = Manifest(labels=["a", "b"], max_length=32, pooling="mean", inputs=["input_ids", "attention_mask"], outputs=["logits"])
    manifest.files = {"model.plan": {}, "model.onnx": {}}
    manifest.export = {"tensorrt": {"engine": {"plugin": "aot", "profile": PROFILE}}}
    return Bundle(tmp_path, manifest)


@pytest.mark.parametrize("cudart, usable", [(Cudart(devices=0), False), (Cudart({"cudaGetDeviceCount": 100}), False), (Cudart(), True)])
def test_tensorrt_is_usable_only_where_a_cuda_device_is(monkeypatch, tmp_path, cudart, usable):
    # TensorRT and cuda-python importable (stand-ins), so only the device decides
    for name, module in (
        ("tensorrt", types.ModuleType("tensorrt")),
        ("cuda", types.ModuleType("cuda")),
        ("cuda.bindings", types.ModuleType("cuda.bindings")),
    ):
        module.__spec__ = types.SimpleNamespace(name=name)
        monkeypatch.setitem(sys.modules, name, module)
    runtime = types.ModuleType("cuda.bindings.runtime")
    runtime.cudaGetDeviceCount = cudart.cudaGetDeviceCount
    sys.modules["cuda.bindings"].runtime = runtime
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    why = trt_runtime.unavailable(_plan_bundle(tmp_path))
    assert (why is None) == usable
    if not usable:
        assert why == "no CUDA device here (the CUDA driver reports none)"
