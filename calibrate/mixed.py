"""Mixed precision: keep the matrix multiplications that quantization hurts most in float.

Used for both graphs of a bundle (model.onnx, model.trt.onnx): each product is scored by
how far quantizing it alone moves the probabilities on the held-out calibration texts;
then the most sensitive are left in float, one more at a time, until the graph agrees
with the float one on `min_agreement` of those texts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.metrics import agreement


def keep_sensitive_in_float(
    graph: str,
    products: dict[str, str],
    quantize: Callable[..., None],
    probs: Callable[[Path], np.ndarray],
    ref: np.ndarray,
    all_int8: float,
    min_agreement: float,
    out: Path,
    work: Path,
    say: Callable[[str], None],
) -> tuple[list[str], dict[str, float], float]:
    """`graph`: its name in messages; `products`: node -> parameter name; `quantize(path,
    exclude, only=None)` writes the graph quantized without the `exclude` nodes (or only
    the `only` ones); `probs(path)`: its probabilities on the held-out texts, `ref` the
    float graph's; `all_int8`: the agreement with every product int8. Leaves the mixed
    graph at `out`; returns (nodes kept float, sensitivity per node, agreement). A one-line
    error when even one int8 product is too many."""
    say(f"{graph}: agreement {all_int8:.3f} < {min_agreement}: scoring each matrix multiplication's sensitivity")
    sensitivity = {}
    for node in products:
        one = work / "one_product.onnx"
        quantize(one, [], only=[node])
        sensitivity[node] = float(np.abs(probs(one) - ref).mean())
    kept: list[str] = []
    reached = 0.0
    # at least one product stays int8: an all-float "int8" graph is no answer
    for node in sorted(sensitivity, key=sensitivity.get, reverse=True)[:-1]:
        kept.append(node)
        quantize(out, kept)
        reached = agreement(probs(out), ref)
        say(f"  {graph}: keeping {len(kept)} in float ({products[node]}): agreement {reached:.3f}")
        if reached >= min_agreement:
            return kept, sensitivity, reached
    raise NanonetError(
        f"{graph}: --min-agreement {min_agreement} not reached on {len(ref)} held-out calibration texts even with "
        f"{len(kept)} of {len(products)} matrix multiplications in float (agreement {reached:.3f}); "
        "lower it, or pass more --samples"
    )
