"""The packed graph in float16, for a strongly typed TensorRT network.

A strongly typed network computes in the types its ONNX graph spells out, so an fp16
engine needs an fp16 graph: the verified float32 `model.trt.onnx` is converted at build
time (one graph ships, the precision is the builder's choice). Weights, constants and
activations become float16; LayerNormalization keeps computing its statistics in
float32 (its `stash_type`, 1 by default); the inputs stay int32 and `logits` stays
float32 (a Cast at the end), so callers see the same interface at either precision.
"""

from __future__ import annotations

import numpy as np


def to_float16(model):
    """A float16 copy of a float32 packed graph (an onnx.ModelProto)."""
    import copy

    from onnx import TensorProto, helper, numpy_helper

    m = copy.deepcopy(model)
    g = m.graph

    def half(t):
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)

    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(half(init))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
            elif a.type == a.TENSOR and a.t.data_type == TensorProto.FLOAT:  # Constant values, ConstantOfShape fills
                a.t.CopyFrom(half(a.t))
    del g.value_info[:]  # intermediate types change; TensorRT and onnx infer them again
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        inner = f"{out.name}_float16"
        for node in g.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
        g.node.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT, name=f"{out.name}_to_float32"))
    return m

