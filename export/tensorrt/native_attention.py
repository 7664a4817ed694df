"""TensorRT >= 11.1: global layers through TensorRT's own attention layer, in its packed form.

TensorRT 11 added a packed ("ragged") IO form to its attention layer (IAttention,
`kPACKED_NHD`: Q, K, V as [T, heads, head size], sequence offsets as cumulative int32
lengths [B+1]); its ONNX parser reaches it through the `TRT_Attention` operator
(onnx-tensorrt, docs/TRT_custom_ops.md: `query_form`/`kv_form` "packed_nhd", `scale`,
which the importer applies, `is_causal`; inputs Q, K, V, then the optional mask and past
key/value, then `query_lengths` and `kv_lengths` at indices 6 and 7), in its packed form
from onnx-tensorrt 11.1 on. That layer has no sliding window
and takes no mask in packed form, so local layers keep the VarlenAttention plugin.

`use_native_attention` rewrites the global VarlenAttention nodes of the packed graph:
qkv [T, 3H] is split into Q, K, V, each reshaped to [T, heads, head size], and the
attention's [T, heads, head size] is reshaped back to [T, H] under the plugin node's
output name, so the rest of the graph is untouched. cu_seqlens is exactly the cumulative
lengths the layer asks for, for queries and keys alike.
"""

from __future__ import annotations

import numpy as np

NATIVE_OP = "TRT_Attention"
NATIVE_DOMAIN = "trt"  # the domain onnx-tensorrt's own TRT_* operators are written in
MIN_TENSORRT = (11, 1)  # TRT_Attention came in 11.0; its packed ("ragged") form in 11.1


def native_attention_available(tensorrt_version: str) -> bool:
    return tuple(int(x) for x in tensorrt_version.split(".")[:2]) >= MIN_TENSORRT


def use_native_attention(model) -> int:
    """Rewrite `model` (in place): every global VarlenAttention node becomes TensorRT's
    packed attention; returns how many were rewritten."""
    from onnx import helper, numpy_helper

    from nanonet.export.tensorrt.varlen_op import OP_TYPE

    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != OP_TYPE or int(attrs["window"]) >= 0:
            nodes.append(node)
            continue
        nh, hs, scale = int(attrs["num_heads"]), int(attrs["head_size"]), float(attrs["scale"])
        p = f"{node.name or f'attention_{rewritten}'}/native/"
        qkv, cu = node.input[0], node.input[1]
        heads = p + "heads_shape"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array([-1, nh, hs], dtype=np.int64), heads),
                numpy_helper.from_array(np.array([nh * hs] * 3, dtype=np.int64), p + "split"),
                numpy_helper.from_array(np.array([-1, nh * hs], dtype=np.int64), p + "out_shape"),
            ]
        )
        nodes.append(helper.make_node("Split", [qkv, p + "split"], [p + "q", p + "k", p + "v"], name=p + "split", axis=1))
        for t in "qkv":
            nodes.append(helper.make_node("Reshape", [p + t, heads], [p + t + "_heads"], name=p + t + "_heads"))
        nodes.append(
            helper.make_node(
                NATIVE_OP,
                [p + "q_heads", p + "k_heads", p + "v_heads", "", "", "", cu, cu],
                [p + "context"],
                name=p + "attention",
                domain=NATIVE_DOMAIN,
                query_form="packed_nhd",
                kv_form="packed_nhd",
                scale=scale,
                is_causal=0,
                TRT_decomposable=1,  # where no fused kernel fits (float32, small heads), unfused layers rather than no engine
            )
        )
        nodes.append(helper.make_node("Reshape", [p + "context", p + "out_shape"], [node.output[0]], name=p + "output"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if rewritten and not any(o.domain == NATIVE_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(NATIVE_DOMAIN, 1))
    return rewritten
