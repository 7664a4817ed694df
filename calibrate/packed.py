"""The packed TensorRT graph (model.trt.onnx) in ONNX Runtime without the plugin.

Each VarlenAttention node is expanded into standard ONNX operators: attention over all
the batch's tokens at once, with a mask that lets a token see only its own sequence (and,
on a local layer, only positions within the window). ONNX Runtime's quantizer can then
calibrate the graph, and checks can run it, without TensorRT, custom ops or torch. The
scores are [heads, T, T] for T tokens in a batch: for calibration-sized batches, not for
serving. `collapse_attention` puts the plugin nodes back into a graph derived from the
expanded one (the quantized graph), keeping everything else.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from nanonet.calibrate.feeds import PACKED_INPUTS, probabilities
from nanonet.calibrate.mixed import keep_sensitive_in_float
from nanonet.calibrate.static import calibrate_ranges, quantize_qdq
from nanonet.runtimes.metrics import agreement

ATTENTION_OP = "VarlenAttention"  # export/tensorrt/varlen_op.OP_TYPE (that module needs torch)
EXPANDED = "/varlen_expanded/"  # in the name of every node and constant an expansion adds
MASKED = -1e9  # finite: no infinities reach the softmax or the calibrator


def expand_attention(model):
    """A copy of a packed graph with every VarlenAttention node replaced by standard ops."""
    import copy

    m = copy.deepcopy(model)
    nodes = []
    for i, node in enumerate(m.graph.node):
        if node.op_type == ATTENTION_OP:
            new_nodes, constants = _expand(node, f"{node.name or f'attention_{i}'}{EXPANDED}")
            nodes.extend(new_nodes)
            m.graph.initializer.extend(constants)
        else:
            nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def collapse_attention(expanded, original):
    """`expanded` (e.g. after quantization) with the expansions replaced by `original`'s
    VarlenAttention nodes again, each where its expansion produced the attention output
    (its earlier nodes may read only cu_seqlens, which is there from the start)."""
    import copy

    m = copy.deepcopy(expanded)
    plugin_nodes = {node.output[0]: node for node in original.graph.node if node.op_type == ATTENTION_OP}
    nodes, placed = [], 0
    for node in m.graph.node:
        if EXPANDED not in node.name:
            nodes.append(node)
        elif node.output[0] in plugin_nodes:
            nodes.append(copy.deepcopy(plugin_nodes[node.output[0]]))
            placed += 1
    if placed != len(plugin_nodes):
        raise ValueError(f"{len(plugin_nodes)} attention nodes in the original graph, {placed} expansions found")
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    for field in (m.graph.initializer, m.graph.value_info):  # the expansions' constants and tensor types
        kept = [i for i in field if EXPANDED not in i.name]
        del field[:]
        field.extend(kept)
    domains = {o.domain for o in m.opset_import}
    m.opset_import.extend(o for o in original.opset_import if o.domain not in domains)
    return m


def _expand(node, p: str):
    """The standard-op nodes and constants computing one VarlenAttention node."""
    from onnx import TensorProto, helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    nh, hs, scale, window = int(attrs["num_heads"]), int(attrs["head_size"]), float(attrs["scale"]), int(attrs["window"])
    qkv, cu = node.input[0], node.input[1]
    H = nh * hs

    def const(name: str, value, dtype) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), p + name))
        return p + name

    def op(op_type: str, inputs: list[str], name: str, **kw) -> str:
        nodes.append(helper.make_node(op_type, inputs, [p + name], name=p + name, **kw))
        return p + name

    nodes, constants = [], []
    heads_shape = const("heads_shape", [-1, nh, hs], np.int64)
    q, k, v = (
        op(
            "Slice",
            [qkv, const(f"{n}_start", [j * H], np.int64), const(f"{n}_end", [(j + 1) * H], np.int64), const(f"{n}_axis", [1], np.int64)],
            n,
        )
        for j, n in enumerate("qkv")
    )
    q = op("Transpose", [op("Reshape", [q, heads_shape], "q_heads")], "q_t", perm=[1, 0, 2])  # (nh, T, hs)
    k = op("Transpose", [op("Reshape", [k, heads_shape], "k_heads")], "k_t", perm=[1, 2, 0])  # (nh, hs, T)
    v = op("Transpose", [op("Reshape", [v, heads_shape], "v_heads")], "v_t", perm=[1, 0, 2])  # (nh, T, hs)
    scores = op("Mul", [op("MatMul", [q, k], "qk"), const("scale", scale, np.float32)], "scores")  # (nh, T, T)

    # which sequence each token belongs to, and its position there, from cu_seqlens
    zero, one = const("zero", 0, np.int64), const("one", 1, np.int64)
    tokens = op("Squeeze", [op("Shape", [qkv], "shape", start=0, end=1)], "tokens")
    t = op("Range", [zero, tokens, one], "t")  # (T,)
    cu64 = op("Cast", [cu], "cu64", to=TensorProto.INT64)
    ends = op("Slice", [cu64, const("one_1d", [1], np.int64), const("end_1d", [np.iinfo(np.int64).max], np.int64)], "ends")  # (B,)
    axis0, axis1 = const("axis0", [0], np.int64), const("axis1", [1], np.int64)
    past = op(
        "Cast",
        [op("GreaterOrEqual", [op("Unsqueeze", [t, axis1], "t_col"), op("Unsqueeze", [ends, axis0], "ends_row")], "past")],
        "past_int",
        to=TensorProto.INT64,
    )
    seq = op("ReduceSum", [past, axis1], "seq", keepdims=0)  # (T,)
    allowed = op("Equal", [op("Unsqueeze", [seq, axis1], "seq_col"), op("Unsqueeze", [seq, axis0], "seq_row")], "same")  # (T, T)
    if window >= 0:
        pos = op("Sub", [t, op("Gather", [cu64, seq], "starts")], "pos")
        dist = op(
            "Abs", [op("Sub", [op("Unsqueeze", [pos, axis1], "pos_col"), op("Unsqueeze", [pos, axis0], "pos_row")], "offset")], "dist"
        )
        allowed = op("And", [allowed, op("LessOrEqual", [dist, const("window", window, np.int64)], "in_window")], "allowed")
    bias = op("Where", [allowed, const("open", 0.0, np.float32), const("masked", MASKED, np.float32)], "bias")
    probs = op("Softmax", [op("Add", [scores, bias], "masked_scores")], "probs", axis=-1)
    out = op("Transpose", [op("MatMul", [probs, v], "context")], "context_t", perm=[1, 0, 2])  # (T, nh, hs)
    nodes.append(helper.make_node("Reshape", [out, const("out_shape", [-1, H], np.int64)], [node.output[0]], name=p + "output"))
    return nodes, constants


def weight_products(model) -> dict[str, str]:
    """The packed graph's MatMul/Gemm nodes with a weight -> the parameter they multiply by,
    named as in the padded graph's record ('encoder.layers.0.fc1', 'head')."""
    inits = {i.name for i in model.graph.initializer}
    return {
        n.name: n.input[1].removeprefix("model.").removesuffix(".weight")
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits
    }


def quantize_packed(
    src,
    out,
    calib: list[dict],
    check: list[dict],
    work,
    threads: int | None = None,
    calibrator: str = "minmax",
    min_agreement: float | None = None,
    say=lambda message: None,
) -> dict:
    """model.trt.onnx -> explicit symmetric int8 Q/DQ on every matrix multiplication with a
    weight (per-channel weights, per-tensor activations from `calib` by `calibrator`; on
    the products' inputs, their outputs float), the form a strongly typed TensorRT network
    builds int8 kernels from; the attention stays float in the plugin.

    With `check` texts and `min_agreement`, the same guard as the padded graph's: when the
    int8 graph agrees with the float one on fewer of them, each product is scored by how far
    quantizing it alone moves the probabilities, and the most sensitive stay float (float32
    in the engine), one more at a time, until the agreement is reached. Returns its record:
    agreement, the products kept float, Q/DQ census."""
    import onnx

    names = PACKED_INPUTS
    work = Path(work)
    model = onnx.load(str(src), load_external_data=False)  # a bundle keeps its weights inside the graph
    products = weight_products(model)
    expanded = work / "packed_expanded.onnx"
    onnx.save(expand_attention(model), str(expanded))

    quantized = work / "packed_qdq_expanded.onnx"
    # the attention's own products stay float, in the plugin: only the expansion computes them here
    attention = [n.name for n in onnx.load(str(expanded)).graph.node if EXPANDED in n.name]
    cache = work / "packed_ranges.json"  # min-max: written by the first quantize_static call, read by the rest
    calibrate_ranges(expanded, calib, names, calibrator, cache)  # packed batches differ in shape: calibrate/ranges.py

    def run(path: Path, exclude: list[str], only: list[str] | None = None) -> None:
        quantize_qdq(expanded, path, calib, names, calibrator, cache, symmetric=True, exclude=attention + exclude, only=only)

    kept: list[str] = []
    run(quantized, kept)
    record: dict = {"calibrator": calibrator}
    if check:

        def probs(path: Path) -> np.ndarray:
            return probabilities(path, check, names, threads)

        ref, got = probs(expanded), probs(quantized)
        reached = before = agreement(got, ref)
        texts = int(sum(len(b["cu_seqlens"]) - 1 for b in check))
        sensitivity = None
        if min_agreement is not None and reached < min_agreement:
            kept, sensitivity, reached = keep_sensitive_in_float(
                "model.trt.onnx", products, run, probs, ref, reached, min_agreement, quantized, work, say
            )
            got = probs(quantized)
        record.update(
            agreement=reached,
            agreement_before=before,
            min_agreement=min_agreement,
            max_prob_diff=float(np.abs(ref - got).max()),
            texts=texts,
            sensitivity={products[k]: v for k, v in sensitivity.items()} if sensitivity else None,
        )
    record["kept_float"] = [products[n] for n in kept]
    q = onnx.load(str(quantized))
    onnx.save(collapse_attention(q, model), str(out))
    record["census"] = dict(Counter(n.op_type for n in q.graph.node if n.op_type.endswith("Linear")))
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    record["quantized_matmuls"] = sum(
        1 for n in q.graph.node if n.op_type in ("MatMul", "Gemm") and all(producer.get(i) == "DequantizeLinear" for i in n.input[:2])
    )
    return record
