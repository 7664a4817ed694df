"""Build `model.plan` from a bundle's `model.trt.onnx` with TensorRT (on the target device).

Written to TensorRT's documented Python API (10.x / 11.x). It needs TensorRT, a GPU and the
VarlenAttention plugin (export/tensorrt/plugin.py); where they are missing, `unavailable()`
says why and `nanonet export --trt` stops after writing the ONNX, printing the command
that builds the engine on the device.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from runtimes.errors import NanonetError


@dataclass
class EngineSpec:
    max_tokens: int = 16384  # T at most (all sequences of a batch together)
    opt_tokens: int = 4096  # T the kernels are tuned for
    max_batch: int = 128  # B at most
    max_seqlen: int = 512  # S at most (also bounded by the bundle's max length)
    precision: str = "fp16"  # fp16 | int8 (from an explicit Q/DQ model)


def unavailable() -> str | None:
    """None when an engine can be built here, else why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'nanonet[trt]' on the device)"
    try:
        import tensorrt as trt

        trt.Builder(trt.Logger(trt.Logger.ERROR))  # raises without a usable GPU
    except Exception as e:  # noqa: BLE001 - any failure here means "no engine on this machine"
        return f"TensorRT cannot create a builder here ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def engine_command(bundle: Path) -> str:
    return f"nanonet engine {bundle}"


def build_engine(onnx_path: Path, plan_path: Path, spec: EngineSpec, timing_cache: Path, log=print) -> dict:
    """Parse the packed ONNX (plugin nodes resolve to the registered plugin), set the
    optimization profiles, build and serialize the engine, keep the timing cache."""
    import tensorrt as trt

    from export.tensorrt.plugin import register_plugin

    attention = register_plugin(log)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise NanonetError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    if not flags and spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape("input_ids", (1,), (spec.opt_tokens,), (spec.max_tokens,))
    profile.set_shape("cu_seqlens", (2,), (min(33, spec.max_batch + 1),), (spec.max_batch + 1,))
    profile.set_shape("max_seqlen", (1,), (min(128, spec.max_seqlen),), (spec.max_seqlen,))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise NanonetError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    tmp = plan_path.with_name(f".{plan_path.name}.tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan_path)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, "attention": attention, "profile": spec.__dict__, "strongly_typed": bool(flags)}
