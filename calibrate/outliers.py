"""Outlier channels multiplied in float, the rest in int8 (LLM.int8(), Dettmers et al. 2022).

BERT-family encoders carry a few input channels with values many times larger than
the rest (here: one channel of layer 0's GELU output reaches 25 where the median
channel peaks at 2; LayerNorm outputs have one or two such channels). Dynamic int8
quantizes a matrix multiplication's input with one range per tensor, so those
channels leave the others a handful of levels. For `y = x W` the split

    y = (x * m) W  +  x[:, idx] W[idx, :]

with m zero on the outlier channels idx and one elsewhere computes the same function
in float; the quantizer then sees only the first product's flatter input, and the
second, a multiplication with a few rows, stays float. Channels are outliers when their
calibrated peak exceeds `ratio` times the median channel's peak.
"""

from __future__ import annotations

import numpy as np


def split_outliers(
    model, nodes: list[str], ranges: dict[str, np.ndarray], ratio: float = 6.0, max_channels: int = 8
) -> tuple[dict[str, list[int]], list[str]]:
    """Split the named MatMul nodes of `model` in place.

    Returns {node: outlier channels} for the nodes split and the names of the new float
    MatMul nodes (to keep out of quantization). At most `max_channels` per node (the
    largest): beyond that the float part would stop being cheap."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    channels: dict[str, list[int]] = {}
    float_nodes: list[str] = []
    for node in list(model.graph.node):
        if node.name not in nodes or node.op_type != "MatMul" or node.input[0] not in ranges or node.input[1] not in inits:
            continue
        peak = ranges[node.input[0]]
        idx = np.flatnonzero(peak > ratio * max(float(np.median(peak)), 1e-12))
        if not len(idx):
            continue
        idx = np.sort(idx[np.argsort(peak[idx])[::-1][:max_channels]])
        w = numpy_helper.to_array(inits[node.input[1]])  # (in, out)
        mask = np.ones(len(peak), dtype=np.float32)
        mask[idx] = 0.0
        p, x, y = node.name, node.input[0], node.output[0]
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(mask, f"{p}_inlier_mask"),
                numpy_helper.from_array(idx.astype(np.int64), f"{p}_outlier_channels"),
                numpy_helper.from_array(np.ascontiguousarray(w[idx]).astype(np.float32), f"{p}_outlier_weight"),
            ]
        )
        before = [
            helper.make_node("Mul", [x, f"{p}_inlier_mask"], [f"{p}_inliers"], name=f"{p}_inliers"),
            helper.make_node("Gather", [x, f"{p}_outlier_channels"], [f"{p}_outliers"], name=f"{p}_outliers", axis=-1),
            helper.make_node("MatMul", [f"{p}_outliers", f"{p}_outlier_weight"], [f"{p}_outlier_product"], name=f"{p}_outlier_matmul"),
        ]
        node.input[0], node.output[0] = f"{p}_inliers", f"{p}_inlier_product"
        after = helper.make_node("Add", [f"{p}_inlier_product", f"{p}_outlier_product"], [y], name=f"{p}_outlier_add")
        position = list(model.graph.node).index(node)
        for i, n in enumerate(before):
            model.graph.node.insert(position + i, n)
        model.graph.node.insert(position + len(before) + 1, after)
        channels[p] = idx.tolist()
        float_nodes.append(f"{p}_outlier_matmul")
    return channels, float_nodes
