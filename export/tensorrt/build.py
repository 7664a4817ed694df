"""`build_bundle_engine`: model.trt.onnx of a bundle -> model.plan beside it, manifest updated."""

from __future__ import annotations

from pathlib import Path

from nanonet.export.tensorrt.engine import EngineSpec, build_engine
from nanonet.runtimes.bundle import Manifest, read_bundle, write_bundle


def build_bundle_engine(
    bundle: str | Path, max_tokens: int, opt_tokens: int, max_batch: int, plugin: str = "aot", precision: str = "fp16", log=print
) -> dict:
    src = read_bundle(bundle)
    onnx_path = src.file("model.trt.onnx")
    if (src.manifest.quantization or {}).get("tensorrt_graph"):
        # quantized with --target tensorrt: the graph's Q/DQ pairs make the matrix products
        # int8; the rest stays in the graph's float32 (Q/DQ of opset 18 take float32 scales),
        # but for the attention (engine.network_graph)
        log(
            f"{bundle}: int8 Q/DQ graph (nanonet quantize --target tensorrt): int8 matrix multiplications, float16 attention, "
            f"float32 elsewhere; --precision does not apply"
        )
        precision = "int8"
    spec = EngineSpec(
        max_tokens=max_tokens,
        opt_tokens=opt_tokens,
        max_batch=max_batch,
        max_seqlen=src.manifest.max_length,
        precision=precision,
        plugin=plugin,
    )
    plan = Path(bundle) / ".model.plan.build"
    cache = Path(bundle).parent / f".{Path(bundle).name}.timing-cache"  # kept beside the bundle across builds
    result = build_engine(onnx_path, plan, spec, cache, log)
    manifest = Manifest(**src.manifest.__dict__)
    manifest.export = {**manifest.export, "tensorrt": {**manifest.export.get("tensorrt", {}), "engine": result}}
    files = {name: src.path / name for name in src.manifest.files} | {"model.plan": plan}
    write_bundle(bundle, manifest, files)
    return result
