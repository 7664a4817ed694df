"""The packed graph in float16, for a strongly typed TensorRT network.

A strongly typed network computes in the types its ONNX graph spells out, so an fp16
engine needs an fp16 graph: the verified float32 `model.trt.onnx` is converted at build
time (one graph ships, the precision is the builder's choice).

What becomes float16 is what depends on the token ids: the activations and the weights
and constants they meet. What is computed from positions and sequence offsets alone
stays float32: the rotary tables (an angle of position x frequency near 500 rad would be
off by up to 0.12 rad in float16), the pooling masks and counts; each such tensor is cast
to float16 where it meets the activations. LayerNormalization keeps its `stash_type`
(float32 statistics in ONNX's definition); the inputs stay int32 and `logits` stays
float32 (a Cast at the end), so callers see the same interface at either precision.
"""

from __future__ import annotations

import numpy as np

# their outputs describe a tensor's shape, not its values
SHAPE_ONLY = {"Shape", "Size", "ConstantOfShape"}


def to_float16(model, data_inputs: tuple[str, ...] = ("input_ids",)):
    """A float16 copy of a float32 packed graph (an onnx.ModelProto)."""
    import copy

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = copy.deepcopy(model)
    g = m.graph
    F, H = TensorProto.FLOAT, TensorProto.FLOAT16
    _constants_to_initializers(g)

    # tensors whose values follow the token ids (the float16 part), through every op but shape reads
    data = set(data_inputs)
    for node in g.node:
        if node.op_type not in SHAPE_ONLY and any(i in data for i in node.input):
            data.update(node.output)
    inferred = onnx.shape_inference.infer_shapes(m).graph  # the types of the position-only tensors
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    inits = {i.name: i for i in g.initializer}
    halves: dict[str, str] = {}  # a float32 initializer or position-only tensor -> its float16 twin
    nodes = []

    def as_half(name: str) -> str:
        if name not in halves:
            halves[name] = f"{name}_float16"
            if name in inits:
                g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16), halves[name]))
            else:  # computed from positions in float32: cast where the activations meet it
                nodes.append(helper.make_node("Cast", [name], [halves[name]], to=H, name=f"{name}_to_float16"))
        return halves[name]

    for node in g.node:
        if any(o in data for o in node.output):
            for k, name in enumerate(node.input):
                is_float = inits[name].data_type == F if name in inits else types.get(name) == F
                if name and name not in data and is_float:
                    node.input[k] = as_half(name)
            for a in node.attribute:
                if node.op_type == "Cast" and a.name == "to" and a.i == F:
                    a.i = H
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    _drop_unread(g)  # float32 initializers only the float16 part read
    del g.value_info[:]  # intermediate types change; TensorRT and onnx infer them again
    for out in g.output:
        if out.type.tensor_type.elem_type != F:
            continue
        inner = f"{out.name}_float16"
        for node in g.node:
            renamed = [inner if o == out.name else o for o in node.output]
            del node.output[:]
            node.output.extend(renamed)
        g.node.append(helper.make_node("Cast", [inner], [out.name], to=F, name=f"{out.name}_to_float32"))
    return m


def _constants_to_initializers(g) -> None:
    """Constant nodes holding a tensor become initializers: one kind of constant to convert."""
    from onnx import helper

    nodes = []
    for node in g.node:
        value = next((a for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is None:
            nodes.append(node)
            continue
        t = helper.get_attribute_value(value)
        t.name = node.output[0]
        g.initializer.append(t)
    del g.node[:]
    g.node.extend(nodes)


def _drop_unread(g) -> None:
    read = {i for node in g.node for i in node.input} | {o.name for o in g.output}
    kept = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(kept)


def cast_around(model, float_inputs: dict[str, tuple[int, ...]], inside: int, outside: int) -> int:
    """Run each node whose op type is in `float_inputs` (op type -> indices of its float
    inputs) in the element type `inside` within a graph of `outside` (in place): a Cast on
    each float input and one back on the output. Returns how many nodes were wrapped.

    The engine builder computes the attention of an int8 graph, whose Q/DQ pairs keep the
    rest float32, in float16 (a float32 attention takes the slow path); the ONNX Runtime
    checks run the float32 reference op inside a float16 graph."""
    from onnx import TensorProto, helper

    tag = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
    nodes, wrapped = [], 0
    for node in model.graph.node:
        if node.op_type not in float_inputs:
            nodes.append(node)
            continue
        for k in float_inputs[node.op_type]:
            inner = f"{node.name}/{node.input[k]}_{tag[inside]}"
            nodes.append(helper.make_node("Cast", [node.input[k]], [inner], to=inside, name=inner))
            node.input[k] = inner
        out = node.output[0]
        node.output[0] = f"{node.name}/{out}_{tag[inside]}"
        nodes.extend([node, helper.make_node("Cast", [node.output[0]], [out], to=outside, name=f"{node.name}/{out}_{tag[outside]}")])
        wrapped += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return wrapped
