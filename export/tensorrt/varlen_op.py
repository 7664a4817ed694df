"""The `VarlenAttention` operator: one definition for torch, ONNX and ONNX Runtime.

In the packed TensorRT graph every attention is one node

    VarlenAttention(qkv [T, 3*H] float, cu_seqlens [B+1] int32, max_seqlen [S] (shape only))
        -> [T, H]
    attributes: num_heads, head_size, scale, window (half-window; -1 = global),
                plugin_namespace, plugin_version, aot (1: the ahead-of-time kernel)

in the domain TRT_DOMAIN. TensorRT's ONNX parser has no importer for the op type, so it
looks up a plugin creator by op type, `plugin_version` and `plugin_namespace`: the
plugin in export/tensorrt/plugin.py; `aot` = 1 makes it take the plugin's ahead-of-time
kernel (engines that run without Python), 0 its Python implementation. Here:

- a torch custom op (`torch.ops.nanonet.varlen_attention`) with the per-sequence
  reference implementation, and its translation to the ONNX node for the exporter;
- the ONNX schema, registered so that onnx.checker validates the node;
- a reference kernel for ONNX Runtime through onnxruntime-extensions (a Python custom op),
  so the packed graph runs and is checked against torch without TensorRT.
"""

from __future__ import annotations

import numpy as np
import torch

from nanonet.model.attention import window_mask

TRT_DOMAIN = "trt.plugins"
ORT_DOMAIN = "ai.onnx.contrib"  # where onnxruntime-extensions' Python ops live
OP_TYPE = "VarlenAttention"
PLUGIN_NAMESPACE = "nanonet"
PLUGIN_VERSION = "1"


def reference(qkv: np.ndarray, cu_seqlens: np.ndarray, num_heads: int, head_size: int, scale: float, window: int) -> np.ndarray:
    """softmax(q k^T * scale + band) v, one sequence at a time (numpy, float32 math)."""
    T = qkv.shape[0]
    q, k, v = qkv.reshape(T, 3, num_heads, head_size).astype(np.float32).transpose(1, 2, 0, 3)  # each (nh, T, hs)
    out = np.zeros((num_heads, T, head_size), dtype=np.float32)
    for s, e in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        scores = q[:, s:e] @ k[:, s:e].transpose(0, 2, 1) * scale  # (nh, l, l)
        scores = np.where(window_mask(e - s, window).numpy(), scores, -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        out[:, s:e] = (scores / scores.sum(-1, keepdims=True)) @ v[:, s:e]
    return out.transpose(1, 0, 2).reshape(T, num_heads * head_size).astype(qkv.dtype)


@torch.library.custom_op("nanonet::varlen_attention", mutates_args=())
def varlen_attention(
    qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: torch.Tensor, num_heads: int, head_size: int, scale: float, window: int
) -> torch.Tensor:
    out = reference(qkv.detach().cpu().float().numpy(), cu_seqlens.cpu().numpy(), num_heads, head_size, scale, window)
    return torch.from_numpy(out).to(qkv.device, qkv.dtype)


@varlen_attention.register_fake
def _(qkv, cu_seqlens, max_seqlen, num_heads, head_size, scale, window):
    return qkv.new_empty(qkv.shape[0], num_heads * head_size)


def onnx_translation():
    """{torch op: onnxscript function} for torch.onnx.export(custom_translation_table=...)."""
    from onnxscript import values

    plugins = values.Opset(TRT_DOMAIN, 1)

    def varlen_attention_onnx(qkv, cu_seqlens, max_seqlen, num_heads: int, head_size: int, scale: float, window: int):
        return plugins.VarlenAttention(
            qkv,
            cu_seqlens,
            max_seqlen,
            num_heads=num_heads,
            head_size=head_size,
            scale=scale,
            window=window,
            plugin_namespace=PLUGIN_NAMESPACE,
            plugin_version=PLUGIN_VERSION,
            aot=1,
        )

    return {torch.ops.nanonet.varlen_attention.default: varlen_attention_onnx}


def register_schema() -> None:
    """Tell onnx (checker, shape inference) what a VarlenAttention node looks like; idempotent."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(OP_TYPE, TRT_DOMAIN):
        return
    A = OpSchema.AttrType
    schema = OpSchema(
        OP_TYPE,
        TRT_DOMAIN,
        1,
        doc="Attention over packed variable-length sequences with a sliding window (window=-1: global).",
        inputs=[
            OpSchema.FormalParameter("qkv", "T", "[T, 3*H] fused query, key, value"),
            OpSchema.FormalParameter("cu_seqlens", "tensor(int32)", "[B+1] sequence offsets, from 0 to T"),
            OpSchema.FormalParameter("max_seqlen", "M", "[S]: only its shape is read"),
        ],
        outputs=[OpSchema.FormalParameter("output", "T", "[T, H]")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "activations"),
            ("M", ["tensor(int32)", "tensor(int64)", "tensor(float)"], "shape carrier"),
        ],
        attributes=[
            OpSchema.Attribute("num_heads", A.INT, "heads"),
            OpSchema.Attribute("head_size", A.INT, "head size"),
            OpSchema.Attribute("scale", A.FLOAT, "softmax scale"),
            OpSchema.Attribute("window", A.INT, "half-window of a local layer; -1 for global"),
            OpSchema.Attribute("plugin_namespace", A.STRING, "TensorRT plugin namespace"),
            OpSchema.Attribute("plugin_version", A.STRING, "TensorRT plugin version"),
            OpSchema.Attribute(
                "aot", A.INT, "1: TensorRT's parser uses the plugin's ahead-of-time kernel, 0: its Python one", required=False
            ),
        ],
    )
    onnx.defs.register_schema(schema)


_ORT_REGISTERED = False


def register_ort_reference() -> str:
    """Register the numpy reference as an onnxruntime-extensions Python op; returns the
    library path to pass to SessionOptions.register_custom_ops_library."""
    global _ORT_REGISTERED
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    if not _ORT_REGISTERED:

        @onnx_op(
            op_type=OP_TYPE,
            inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_int32],
            outputs=[PyCustomOpDef.dt_float],
            attrs={
                "num_heads": PyCustomOpDef.dt_int64,
                "head_size": PyCustomOpDef.dt_int64,
                "scale": PyCustomOpDef.dt_float,
                "window": PyCustomOpDef.dt_int64,
                "plugin_namespace": PyCustomOpDef.dt_string,
                "plugin_version": PyCustomOpDef.dt_string,
                "aot": PyCustomOpDef.dt_int64,
            },
        )
        def _varlen(qkv, cu_seqlens, max_seqlen, **attrs):
            return reference(qkv, cu_seqlens, int(attrs["num_heads"]), int(attrs["head_size"]), float(attrs["scale"]), int(attrs["window"]))

        _ORT_REGISTERED = True
    return get_library_path()


def for_onnxruntime(model, float16: bool = False):
    """A copy of a packed model whose plugin nodes run on the ONNX Runtime reference op
    (float32: with `float16`, each one between Casts from and back to float16)."""
    import copy

    from onnx import TensorProto, helper

    from nanonet.export.tensorrt.precision import cast_around

    m = copy.deepcopy(model)
    for node in m.graph.node:
        if node.op_type == OP_TYPE and node.domain == TRT_DOMAIN:
            node.domain = ORT_DOMAIN
    if float16:
        cast_around(m, {OP_TYPE: (0,)}, inside=TensorProto.FLOAT, outside=TensorProto.FLOAT16)
    imports = [o for o in m.opset_import if o.domain != TRT_DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(imports + [helper.make_opsetid(ORT_DOMAIN, 1)])
    return m
