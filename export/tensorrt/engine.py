"""Build `model.plan` from a bundle's `model.trt.onnx` with TensorRT (on the target device).

Written to TensorRT's documented Python API (10.x / 11.x). It needs TensorRT, a GPU and the
VarlenAttention plugin (export/tensorrt/plugin.py); where they are missing, `unavailable()`
says why and `nanonet export --trt` stops after writing the ONNX, printing the command
that builds the engine on the device.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from nanonet.export.tensorrt.native_attention import NATIVE_OP, native_attention_available, use_native_attention
from nanonet.runtimes.errors import NanonetError

PLUGIN_CHOICES = ("aot", "jit")
PRECISIONS = ("fp16", "fp32")
AOT_HEAD_SIZES = (16, 32, 64, 128)  # triton_varlen.HEAD_SIZES, without importing Triton here


@dataclass
class EngineSpec:
    max_tokens: int = 16384  # T at most (all sequences of a batch together)
    opt_tokens: int = 4096  # T the kernels are tuned for
    max_batch: int = 128  # B at most
    max_seqlen: int = 512  # S at most (also bounded by the bundle's max length)
    precision: str = "fp16"  # fp16 | fp32 | int8 (the graph of a bundle quantized with --target tensorrt: explicit Q/DQ)
    plugin: str = "aot"  # aot: the Triton kernel inside the engine (runs without Python) | jit: torch, for development
    attention: str = (
        "auto"  # global layers: auto (TensorRT's own packed attention from TensorRT 11.1 on, else the plugin) | plugin | native
    )


def check_options(plugin: str, precision: str, quantized: bool = False) -> None:
    """One-line errors for a bad --plugin or --precision (int8 is for a bundle quantized
    with --target tensorrt, which sets it)."""
    if plugin not in PLUGIN_CHOICES:
        raise NanonetError(f"--plugin: must be one of {', '.join(PLUGIN_CHOICES)}, got '{plugin}'")
    if precision not in PRECISIONS + (("int8",) if quantized else ()):
        raise NanonetError(f"--precision: must be one of {', '.join(PRECISIONS)}, got '{precision}'")


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


def engine_command(bundle: Path, plugin: str = "aot", precision: str = "fp16") -> str:
    return (
        f"nanonet engine {bundle}"
        + (f" --plugin {plugin}" if plugin != "aot" else "")
        + (f" --precision {precision}" if precision != "fp16" else "")
    )


def build_engine(onnx_path: Path, plan_path: Path, spec: EngineSpec, timing_cache: Path, log=print) -> dict:
    """Parse the packed ONNX (plugin nodes resolve to the registered plugin), set the
    optimization profiles, build and serialize the engine, check it against ONNX Runtime
    (verify_engine), write it, keep the timing cache."""
    import tensorrt as trt

    from nanonet.export.tensorrt import plugin

    check_options(spec.plugin, spec.precision, quantized=True)  # network_graph checks an int8 graph has its Q/DQ
    if spec.attention not in ("auto", "plugin", "native"):
        raise NanonetError(f"attention: must be auto, plugin or native, got '{spec.attention}'")
    plugin.register_plugin()
    kernels_before = len(plugin.COMPILED)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # strongly typed: the graph's types are the engine's (precision.py); Q/DQ pairs say int8
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    native = spec.attention == "native" or (spec.attention == "auto" and native_attention_available(trt.__version__))
    parsed = parser.parse(network_graph(onnx_path, spec.plugin, spec.precision, native), str(onnx_path))
    if not parsed and native and spec.attention == "auto":
        log(f"TensorRT {trt.__version__} did not take {NATIVE_OP} ({parser.get_error(0)}); every layer on the plugin instead")
        native = False
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        parser.parse(network_graph(onnx_path, spec.plugin, spec.precision, native), str(onnx_path))
    if parser.num_errors:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise NanonetError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
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
    checks = verify_engine(bytes(serialized), onnx_path, spec)
    worst = max(checks, key=lambda c: c["max_abs_diff"] / c["bound"])
    log(
        f"engine vs ONNX Runtime on {len(checks)} packed batches: max abs logit diff {worst['max_abs_diff']:.1e} (bound {worst['bound']:.1e})"
    )
    tmp = plan_path.with_name(f".{plan_path.name}.tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan_path)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    # TensorRT may ask for a kernel more than once (once per type and format it tries)
    kernels = list({json.dumps(k, sort_keys=True): k for k in plugin.COMPILED[kernels_before:]}.values())
    attention = f"plugin {plugin.PLUGIN_ID} ({'AOT Triton kernel' if spec.plugin == 'aot' else 'JIT, needs Python at run time'})"
    if native:
        attention = f"global layers: TensorRT's packed attention layer ({NATIVE_OP}); local layers: {attention}"
    log(
        f"TensorRT {trt.__version__}: attention through {attention}"
        + "".join(
            f"\n  kernel {k['kernel']} {k['dtype']} window {k['window']}: {k['target']}, PTX {k['ptx_isa']}, "
            f"{k['num_warps']} warps, {k['shared_mem']} B shared"
            for k in kernels
        )
    )
    return {
        "tensorrt": trt.__version__,
        "attention": attention,
        "native_global_attention": native,
        "plugin": spec.plugin,
        "precision": spec.precision,
        "kernels": kernels,
        "profile": spec.__dict__,
        "verification": checks,
    }


def verify_engine(plan: bytes, onnx_path: Path, spec: EngineSpec) -> list[dict]:
    """The freshly built engine against ONNX Runtime on the export's verification batches
    (engine_check.py); raises, and nothing is written, past the precision's bound."""
    import onnx

    from nanonet.export.tensorrt.engine_check import check_engine, graph_facts, onnxruntime_reference
    from nanonet.runtimes.tensorrt import EngineRunner

    windows, vocab_size = graph_facts(onnx.load(str(onnx_path), load_external_data=False))
    runner = EngineRunner(plan, spec.__dict__, f"{onnx_path} (engine being built)")
    try:
        engine = lambda ids, cu, longest: runner.run(ids, cu, longest.size)  # noqa: E731
        return check_engine(engine, onnxruntime_reference(onnx_path), windows, vocab_size, spec.max_seqlen, spec.precision, onnx_path)
    finally:
        runner.close()


def network_graph(onnx_path: Path, plugin: str, precision: str, native: bool = False) -> bytes:
    """model.trt.onnx as TensorRT's parser gets it: with `native`, global layers on
    TensorRT's own packed attention (native_attention.py); each remaining VarlenAttention
    node's `aot` attribute set for `plugin` (the parser takes a plugin's ahead-of-time
    implementation only when the node asks for it); converted to float16 for an fp16 engine,
    attention cast to float16 in an int8 one."""
    import onnx
    from onnx import TensorProto

    from nanonet.export.tensorrt.precision import cast_around, to_float16
    from nanonet.export.tensorrt.varlen_op import OP_TYPE

    model = onnx.load(str(onnx_path), load_external_data=False)  # a bundle keeps its weights inside the graph
    if precision == "int8" and not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise NanonetError(f"{onnx_path}: an int8 engine needs the graph quantized with nanonet quantize --method static --target tensorrt")
    if native:
        use_native_attention(model)
    set_plugin_choice(model, plugin, onnx_path)
    if precision == "int8":  # Q/DQ products, the rest float32: attention in float16 all the same
        cast_around(model, {OP_TYPE: (0,), NATIVE_OP: (0, 1, 2)}, inside=TensorProto.FLOAT16, outside=TensorProto.FLOAT)
    return (to_float16(model) if precision == "fp16" else model).SerializeToString()


def set_plugin_choice(model, choice: str, where: Path) -> None:
    """Set `aot` on every VarlenAttention node of `model` (in place); AOT needs a head size
    the Triton kernel takes."""
    from onnx import helper

    from nanonet.export.tensorrt.varlen_op import OP_TYPE

    for node in model.graph.node:
        if node.op_type == OP_TYPE:
            head_size = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "head_size")
            if choice == "aot" and head_size not in AOT_HEAD_SIZES:
                raise NanonetError(
                    f"{where}: heads of {head_size} have no AOT attention kernel (supported: "
                    f"{', '.join(map(str, AOT_HEAD_SIZES))}); build with --plugin jit"
                )
            kept = [a for a in node.attribute if a.name != "aot"]
            del node.attribute[:]
            node.attribute.extend(kept + [helper.make_attribute("aot", int(choice == "aot"))])
