"""Static int8 through ONNX Runtime's quantize_static: the one pipeline both graphs use
(model.onnx with --method static, model.trt.onnx with --target tensorrt).

Only the matrix multiplications with a weight are quantized (QDQ format, per-channel
int8 weights); the logits stay float. For TensorRT the activations are symmetric int8
and Q/DQ sits on the products' inputs only (TensorRT picks their output precision
itself); for ONNX Runtime on x86 the activations are uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanonet.calibrate.feeds import calibration_reader
from nanonet.calibrate.graph import float_outputs
from nanonet.calibrate.ranges import HISTOGRAM_CALIBRATORS, calibration_method, write_histogram_ranges

OP_TYPES = ["MatMul", "Gemm"]  # the operators quantized, where they multiply by a weight


def calibrate_ranges(src: Path, batches: list[dict[str, np.ndarray]], names: list[str], calibrator: str, cache: Path) -> None:
    """Write the histogram calibrators' ranges to `cache` once, for every later
    `quantize_qdq` call to read (min-max: the first call writes the cache itself)."""
    if calibrator in HISTOGRAM_CALIBRATORS:
        write_histogram_ranges(src, batches, names, calibrator, OP_TYPES, cache)


def quantize_qdq(
    src: Path,
    out: Path,
    batches: list[dict[str, np.ndarray]],
    names: list[str],
    calibrator: str,
    cache: Path,
    symmetric: bool,
    exclude: list[str],
    only: list[str] | None = None,
) -> None:
    """`src` with int8 Q/DQ on its weighted products (all but `exclude`, or only `only`)
    into `out`, activation ranges from `batches` by `calibrator`, read from or written to
    `cache`. `symmetric`: TensorRT's form (int8 activations, Q/DQ on inputs only)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options = {
        "MatMulConstBOnly": True,
        "WeightSymmetric": True,
        "ActivationSymmetric": symmetric,
        "OpTypesToExcludeOutputQuantization": OP_TYPES if symmetric else [],
    }
    quantize_static(
        src,
        out,
        calibration_reader(batches, names),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=OP_TYPES,
        per_channel=True,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=calibration_method(calibrator),
        nodes_to_exclude=exclude,
        nodes_to_quantize=only,
        extra_options=options,
        calibration_cache_path=str(cache),
    )
    graph = onnx.load(str(out))
    if float_outputs(graph):
        onnx.save(graph, str(out))
