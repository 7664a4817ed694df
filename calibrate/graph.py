"""Graph surgery and inspection for quantization (onnx + onnxruntime, no torch).

- `finite_mask`: the exported attention mask fills with float32's lowest value; a
  calibrator that sees it stretches a range to -3.4e38 and int8 collapses. It is
  replaced by a finite value that still zeroes attention after softmax.
- `float_outputs`: static quantization puts Quantize/DequantizeLinear on the head's
  output too; the logits are the answer, and an int8 grid on them (clipped, with a
  histogram calibrator) only flips predictions. The pair is taken out again.
- `census`: the operators of the graph ONNX Runtime actually runs (after its own
  fusions), to prove that the matrix multiplications were quantized.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from nanonet.runtimes.errors import NanonetError

MASK_VALUE = -1e4  # exp(-1e4) is 0 in float32; attention scores are orders of magnitude smaller
QUANTIZED_MATMULS = {"QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QAttention"}
FLOAT_MATMULS = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm"}


def finite_mask(model, value: float = MASK_VALUE) -> int:
    """Replace every float constant equal to float32's lowest value by `value`, in place.

    Returns how many tensors were changed."""
    from onnx import numpy_helper

    lowest = np.finfo(np.float32).min
    changed = 0

    def fix(tensor):
        nonlocal changed
        arr = numpy_helper.to_array(tensor)
        if arr.dtype in (np.float32, np.float16) and arr.size and np.all(arr == np.asarray(lowest, arr.dtype)):
            tensor.CopyFrom(numpy_helper.from_array(np.full_like(arr, value), tensor.name))
            changed += 1

    for init in model.graph.initializer:
        fix(init)
    for node in model.graph.node:
        if node.op_type in ("Constant", "ConstantOfShape"):
            for attr in node.attribute:
                if attr.type == attr.TENSOR:
                    fix(attr.t)
    return changed


def lowest_constants(model) -> int:
    """How many float constants of the graph still equal float32's lowest value."""
    from onnx import numpy_helper

    lowest = np.finfo(np.float32).min
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.type == a.TENSOR
    ]
    return sum(1 for t in tensors if (arr := numpy_helper.to_array(t)).size and arr.dtype == np.float32 and np.all(arr == lowest))


def float_outputs(model) -> list[str]:
    """Take out the Quantize -> Dequantize pair that ends in a graph output, in place: the
    output is its producer's float value again. Returns the outputs changed."""
    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = [o.name for o in model.graph.output]
    uses = Counter(i for n in model.graph.node for i in n.input) + Counter(outputs)
    changed, pairs, renamed = [], [], set()
    for out in outputs:
        dq = producer.get(out)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or uses[q.output[0]] != 1 or uses[q.input[0]] != 1 or q.input[0] not in producer:
            continue
        source = producer[q.input[0]]
        source.output[list(source.output).index(q.input[0])] = out
        pairs += [q, dq]
        renamed.add(q.input[0])
        changed.append(out)
    for node in pairs:
        model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input} | set(outputs)
    for field, drop in (
        (model.graph.initializer, lambda t: t.name not in used),  # the pairs' scales and zero points
        (model.graph.value_info, lambda t: t.name in renamed),
    ):
        kept = [t for t in field if not drop(t)]
        if len(kept) < len(field):
            del field[:]
            field.extend(kept)
    return changed


def census(path: str | Path) -> Counter:
    """Operator counts of the graph after ONNX Runtime's optimizations (what really runs)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    return Counter(n.op_type for n in graph.node)


def check_quantized(ops: Counter, path: Path, expect_activations: bool) -> dict:
    """Fail when the quantizer left nothing quantized, or (static) left activations in float."""
    quantized = sum(ops[k] for k in QUANTIZED_MATMULS)
    summary = {
        "quantized_matmuls": quantized,
        "float_matmuls": sum(ops[k] for k in FLOAT_MATMULS),
        "quantize_linear": ops["QuantizeLinear"] + ops["DynamicQuantizeLinear"],
        "ops": dict(sorted(ops.items())),
    }
    if quantized == 0 and not (expect_activations and ops["QuantizeLinear"] and ops["DequantizeLinear"]):
        raise NanonetError(f"{path}: no matrix multiplication was quantized (operators: {dict(ops)})")
    if expect_activations and ops["QuantizeLinear"] == 0 and ops["QLinearMatMul"] == 0 and ops["MatMulIntegerToFloat"] == 0:
        raise NanonetError(f"{path}: static quantization left every activation in float (no QuantizeLinear in the optimized graph)")
    return summary


def quantize_embedding_table(model, min_rows: int = 1024) -> dict | None:
    """Store the word-embedding table as int8 with one scale per row, in place.

    The table is most of a small encoder's bytes (all-MiniLM-L6-v2: 30,522 x 384 floats,
    47 MB). Gather picks int8 rows, then the rows are cast and scaled: the same per-token
    work as before, a quarter of the bytes. Position and token-type tables stay float.
    Returns what was done, or None when no table is large enough."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    candidates = [(numpy_helper.to_array(inits[n.input[0]]), n) for n in gathers]
    candidates = [(a, n) for a, n in candidates if a.ndim == 2 and a.dtype == np.float32 and a.shape[0] >= min_rows]
    if not candidates:
        return None
    table, node = max(candidates, key=lambda c: c[0].shape[0])
    name = node.input[0]
    scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0  # (V, 1)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    for init in list(model.graph.initializer):
        if init.name == name:
            model.graph.initializer.remove(init)
    model.graph.initializer.extend(
        [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")]
    )
    out = node.output[0]
    rows, scales, rows_f = f"{out}_int8_rows", f"{out}_row_scales", f"{out}_rows_f32"
    new = [
        helper.make_node("Gather", [f"{name}_int8", node.input[1]], [rows], name=f"{node.name}_int8", axis=0),
        helper.make_node("Gather", [f"{name}_scale", node.input[1]], [scales], name=f"{node.name}_scale", axis=0),
        helper.make_node("Cast", [rows], [rows_f], name=f"{node.name}_cast", to=1),
        helper.make_node("Mul", [rows_f, scales], [out], name=f"{node.name}_dequantize"),
    ]
    nodes = list(model.graph.node)
    i = nodes.index(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:i] + new + nodes[i + 1 :])
    error = float(np.abs(q.astype(np.float32) * scale - table).max())
    return {"table": name, "rows": int(table.shape[0]), "width": int(table.shape[1]), "max_abs_error": error}
