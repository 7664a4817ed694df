"""Activation smoothing before int8 (SmoothQuant, Xiao et al. 2023), on the ONNX graph.

Dynamic int8 quantizes a matrix multiplication's input with one range per tensor, so a
few channels with large values (BERT's LayerNorm outputs have them) leave the rest
with a handful of levels. For `y = x W`, dividing input channel j by s_j and
multiplying row j of W by s_j changes nothing in float, but moves range from the
activation, quantized per tensor, to the weight, quantized per output channel:

    s_j = max|x_j| ** alpha / max|W_j,:| ** (1 - alpha)

max|x_j| comes from calibration text. Each smoothed multiplication
gets one elementwise Mul by 1/s in front of it (cheap next to the multiplication), so
the float graph computes the same function (checked by the tests) and the quantizer
sees the flatter activations.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

SCALE_RANGE = (1e-2, 1e2)  # keeps a dead channel (max 0) from getting an extreme factor


def activation_ranges(
    path: str | Path, batches: list[dict[str, np.ndarray]], inputs: list[str], tensors: list[str], threads: int | None = None
) -> dict[str, np.ndarray]:
    """Per-channel max |value| of each of `tensors` over every position of `batches`, padding
    included: the dynamic quantizer takes its range over the whole padded tensor too."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(path))
    model.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(model, str(probe))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(probe), opts, providers=["CPUExecutionProvider"])
        ranges: dict[str, np.ndarray] = {}
        for b in batches:
            outs = session.run(tensors, {n: b[n] for n in inputs})
            for name, value in zip(tensors, outs):
                peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    return ranges


def smooth_matmuls(model, nodes: list[str], ranges: dict[str, np.ndarray], alpha: float) -> int:
    """Smooth the named MatMul nodes of `model` in place (their weight initializers are
    rescaled, a Mul by 1/s is inserted before each); returns how many were smoothed."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done = 0
    for node in list(model.graph.node):
        if node.name not in nodes or node.op_type != "MatMul" or node.input[0] not in ranges:
            continue
        weight_name = node.input[1]
        if users.get(weight_name, 0) != 1:  # a shared weight would be rescaled for its other users too
            continue
        w = numpy_helper.to_array(inits[weight_name])  # (in, out)
        x_max = np.maximum(ranges[node.input[0]], 1e-5)
        w_max = np.maximum(np.abs(w).max(axis=1), 1e-5)
        s = np.clip(x_max**alpha / w_max ** (1 - alpha), *SCALE_RANGE).astype(np.float32)
        inits[weight_name].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), weight_name))
        inv = f"{node.name}_smooth_inverse"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        smoothed = f"{node.input[0]}_smoothed_for_{node.name}"
        mul = helper.make_node("Mul", [node.input[0], inv], [smoothed], name=f"{node.name}_smooth")
        position = list(model.graph.node).index(node)
        node.input[0] = smoothed
        model.graph.node.insert(position, mul)
        done += 1
    return done
