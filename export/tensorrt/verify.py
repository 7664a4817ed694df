"""Write model.trt.onnx and check it before it ships: onnx.checker with the plugin's schema,
then ONNX Runtime (plugin nodes on the reference op) against the torch student on packed
batches of mixed lengths, with texts longer than the local window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nanonet.export.onnx_export import TOLERANCE
from nanonet.export.tensorrt.packed import example_inputs, export_packed
from nanonet.export.tensorrt.varlen_op import for_onnxruntime, register_ort_reference
from nanonet.extras import require
from nanonet.model.encoder import NanoClassifier
from nanonet.model.packing import pack_sequences
from nanonet.runtimes.errors import NanonetError


def packed_session(path: Path | None = None, model=None, float16: bool = False):
    """An ONNX Runtime session running a packed graph (a file, or an onnx.ModelProto),
    plugin nodes on the reference op."""
    import onnx
    import onnxruntime as ort

    from nanonet.runtimes.backends import ort_options

    require("onnxruntime_extensions", "running model.trt.onnx without TensorRT")
    opts = ort_options()  # exact integer products for a Q/DQ graph on any x86 CPU
    opts.register_custom_ops_library(register_ort_reference())
    graph = for_onnxruntime(model if model is not None else onnx.load(str(path)), float16)
    return ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def verification_batches(windows: list[int], max_length: int, vocab_size: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, input_ids, cu_seqlens, max_seqlen) of the packed batches an export and an
    engine are checked on: one sequence, mixed lengths, and texts longer than the widest
    local window (`windows`: each layer's half-window, -1 for a global layer)."""
    widest = max([2 * w + 1 for w in windows if w >= 0], default=32)
    long = min(max_length, widest + 8)
    shapes = (
        ("one sequence", [min(12, max_length)]),
        ("mixed lengths", [3, min(40, max_length), 1, min(17, max_length)]),
        (f"longer than the local window ({long} tokens)", [long, max(1, long // 3)]),
    )
    return [(name, *(t.numpy() for t in example_inputs(lengths, vocab_size, seed=i))) for i, (name, lengths) in enumerate(shapes)]


def packed_runner(path: Path | None = None, model=None, float16: bool = False):
    """(input_ids, cu_seqlens, max_seqlen) -> logits: ONNX Runtime's run of a packed graph
    (`packed_session`'s arguments), plugin nodes on the reference op."""
    session = packed_session(path, model, float16)
    return lambda ids, cu, longest: session.run(["logits"], {"input_ids": ids, "cu_seqlens": cu, "max_seqlen": longest})[0]


def verify_packed(model: NanoClassifier, path: Path, max_length: int) -> list[dict]:
    cfg = model.config
    run = packed_runner(path)
    checks = []
    for name, ids, cu, longest in verification_batches([cfg.window(i) for i in range(cfg.num_layers)], max_length, cfg.vocab_size):
        got = run(ids, cu, longest)
        with torch.no_grad():
            ref = model(pack_sequences([torch.from_numpy(ids[a:b]).long() for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])).numpy()
        diff, same = float(np.abs(got - ref).max()), bool((got.argmax(-1) == ref.argmax(-1)).all())
        checks.append({"shape": name, "batch": len(cu) - 1, "tokens": int(cu[-1]), "max_abs_diff": diff, "argmax_equal": same})
        if not (diff <= TOLERANCE and same):
            raise NanonetError(
                f"model.trt.onnx: the reference run disagrees with torch on '{name}': max abs logit diff {diff:.2e}; nothing was written"
            )
    return checks


def export_packed_verified(model: NanoClassifier, max_length: int, workdir: Path) -> tuple[Path, dict]:
    path = workdir / "model.trt.onnx"
    facts = export_packed(model, path)
    facts["verification"] = verify_packed(model, path, max_length)
    return path, facts
