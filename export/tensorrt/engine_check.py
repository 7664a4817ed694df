"""No engine without a numeric check: a built engine runs the export's verification
batches and is compared with ONNX Runtime's run of the same packed graph (plugin nodes on
the reference op); `model.plan` is written only within the precision's bound.

Bounds, on the largest absolute logit difference:
- fp32: 1e-4, the bound the ONNX export itself meets against torch.
- fp16: 1e-2 x max(1, largest reference logit). The float16 graph run by ONNX Runtime stays
  within 5e-3 x the largest logit of torch (tests/test_tensorrt_graph.py); TensorRT may
  fuse and reorder the float16 sums differently, hence twice that.
- int8: 5e-2 x max(1, largest reference logit). Both runtimes quantize with the same Q/DQ
  scales, but a different float order can round an activation to the neighbouring step
  (1/255 of its range), about a step per layer over a few layers.
A wrong attention scale or length convention moves the logits by far more than these
(tests/test_tensorrt_engine_check.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from nanonet.export.onnx_export import TOLERANCE
from nanonet.runtimes.errors import NanonetError

RELATIVE_BOUND = {"fp16": 1e-2, "int8": 5e-2}
RunPacked = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (input_ids, cu_seqlens, max_seqlen) -> logits


def bound(precision: str, reference: np.ndarray) -> float:
    if precision == "fp32":
        return TOLERANCE
    return RELATIVE_BOUND[precision] * max(1.0, float(np.abs(reference).max()))


def graph_facts(model) -> tuple[list[int], int]:
    """(each VarlenAttention node's window, the vocabulary size) of a packed graph: the
    vocabulary is the first dimension of the table `input_ids` indexes (through casts)."""
    from onnx import helper

    from nanonet.export.tensorrt.varlen_op import OP_TYPE

    windows = [helper.get_attribute_value(a) for n in model.graph.node if n.op_type == OP_TYPE for a in n.attribute if a.name == "window"]
    tables = {i.name: i.dims for i in model.graph.initializer}
    ids = {"input_ids"}
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        if node.op_type in ("Cast", "Identity") and node.input[0] in ids:
            ids.update(node.output)
        elif node.op_type == "Gather" and node.input[1] in ids and node.input[0] in tables:
            return windows, int(tables[node.input[0]][0])
    raise NanonetError("model.trt.onnx: no embedding table is indexed by input_ids; is this a nanonet packed graph?")


def check_engine(
    run: RunPacked, reference: RunPacked, windows: list[int], vocab_size: int, max_length: int, precision: str, where: Path
) -> list[dict]:
    """Run both on the verification batches; one-line error with the figures past the bound."""
    from nanonet.export.tensorrt.verify import verification_batches

    checks = []
    for name, ids, cu, longest in verification_batches(windows, max_length, vocab_size):
        got, ref = np.asarray(run(ids, cu, longest), dtype=np.float32), reference(ids, cu, longest)
        if got.shape != ref.shape:
            raise NanonetError(
                f"{where}: the engine returned logits of shape {got.shape} on '{name}', ONNX Runtime {ref.shape}; no model.plan was written"
            )
        diff, limit = float(np.abs(got - ref).max()), bound(precision, ref)
        checks.append({"shape": name, "batch": len(cu) - 1, "tokens": int(cu[-1]), "max_abs_diff": diff, "bound": limit})
        if not diff <= limit:  # NaN fails too
            raise NanonetError(
                f"{where}: the {precision} engine disagrees with ONNX Runtime on '{name}': max abs logit diff {diff:.2e} "
                f"(bound {limit:.1e}); no model.plan was written"
            )
    return checks


def onnxruntime_reference(onnx_path: Path) -> RunPacked:
    """ONNX Runtime's run of the packed graph at `onnx_path` (plugin nodes on the reference op)."""
    from nanonet.export.tensorrt.verify import packed_runner

    return packed_runner(onnx_path)
