"""Activation ranges for static quantization from the histogram calibrators.

quantize_static runs ONNX Runtime's calibrators with two limits this project works around:

- it collects every batch in one call, and the histogram calibrators stack each tensor
  across that call's batches into one array, which batches of different shapes (packed
  texts, batches padded to their own longest) cannot form. Collected one batch per call,
  the histograms merge across calls instead.
- it gives the entropy calibrator a 128-bin histogram for 128 int8 levels, so the only
  threshold it can weigh is the maximum: entropy was min-max. Here the histograms have
  2,048 bins, as TensorRT's entropy calibrator has, and entropy picks the threshold whose
  128-level quantization keeps the distribution closest (KL divergence).

The ranges are written as quantize_static's calibration cache, which it then reads
instead of calibrating. Min-max needs none of this and stays with quantize_static.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np


def calibration_method(calibrator: str):
    """ONNX Runtime's CalibrationMethod for a `--calibrator` name."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[
        calibrator
    ]


HISTOGRAM_CALIBRATORS = {
    "percentile": {"num_bins": 2048, "percentile": 99.999},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 128},
}


def write_histogram_ranges(
    model: str | Path, batches: list[dict[str, np.ndarray]], inputs: list[str], calibrator: str, op_types: list[str], cache: str | Path
) -> Path:
    """Calibrate `model`'s inputs and outputs of `op_types` nodes on `batches` with
    `calibrator` (percentile or entropy); write the ranges to `cache` for quantize_static's
    `calibration_cache_path`."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    class OneBatch(CalibrationDataReader):
        def __init__(self, batch: dict[str, np.ndarray]):
            self.batch = {n: batch[n] for n in inputs}

        def get_next(self):
            batch, self.batch = self.batch, None
            return batch

    method = calibration_method(calibrator)
    with tempfile.TemporaryDirectory(prefix="nanonet-calibrate-") as tmp:
        calibrator_ = create_calibrator(
            Path(model),
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=HISTOGRAM_CALIBRATORS[calibrator],
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints a line per call
            for batch in batches:
                calibrator_.collect_data(OneBatch(batch))
            ranges = calibrator_.compute_data()
    save_tensors_data(ranges, cache)
    return Path(cache)
