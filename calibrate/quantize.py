"""`quantize_bundle`: an fp32 bundle -> an int8 bundle, through ONNX Runtime's quantizer.

- dynamic (the default): int8 weights per output channel; activations quantized at run
  time. With calibration text, a held-out slice of it checks agreement with fp32.
- static: activation ranges from calibration texts (MinMax, Percentile or Entropy);
  uint8 activations with int8 per-channel weights on x86 (QDQ format, which ONNX Runtime
  fuses into integer kernels). Only the matrix multiplications with a weight are
  quantized: LayerNorm, Softmax, GELU, residual adds, gathers and attention stay float.
- smoothing (opt-in, dynamic, with calibration text): per-channel activation range moved
  into the weights before quantizing (SmoothQuant; see smooth.py), the float function
  unchanged. Off by default: on this project's students it helped one and not another.
- when agreement with fp32 on a held-out half of the calibration texts is below
  `min_agreement`, two remedies in turn:
  1. outlier split (dynamic): the few input channels whose calibrated range dwarfs the
     rest multiply in float, the others stay int8 (LLM.int8(); see outliers.py); about
     a tenth of the speed, measured;
  2. mixed precision: each quantized matrix multiplication is scored by how far
     quantizing it alone moves the probabilities, and the most sensitive are kept in
     float, one more at a time, until the agreement is reached.
- 7-bit weights (`weight_bits=7`, dynamic): int8 weights limited to [-64, 64]. On x86 CPUs
  without VNNI, ONNX Runtime's fast uint8 x int8 kernels overflow with full-range weights
  (pairs of products summed in 16 bits: 2 * 255 * 127 > 32767, 2 * 255 * 64 is not),
  so the runtime has it switch them to slower exact kernels (runtimes.backends.ort_options);
  7-bit weights never overflow and keep the fast kernels, for one bit of weight precision.
- target tensorrt: explicit symmetric int8 Q/DQ (activations and per-channel weights),
  the form TensorRT consumes; checked here through ONNX Runtime. A bundle exported with
  --trt gets its packed graph (model.trt.onnx) quantized the same way from the same
  texts and under the same agreement guard (calibrate/packed.py): that is the graph
  `nanonet engine` builds an int8 engine from.

The attention mask's fill value is made finite before calibration (see graph.py), and the
operator census of the optimized graph must show quantized matrix multiplications.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from nanonet.calibrate.data import sample_texts
from nanonet.calibrate.graph import MASK_VALUE, census, check_quantized, finite_mask, float_outputs, quantize_embedding_table
from nanonet.calibrate.mixed import keep_sensitive_in_float
from nanonet.calibrate.outliers import split_outliers
from nanonet.calibrate.ranges import HISTOGRAM_CALIBRATORS, calibration_method, write_histogram_ranges
from nanonet.calibrate.smooth import activation_ranges, smooth_matmuls
from nanonet.runtimes.backends import ort_options
from nanonet.runtimes.bundle import Manifest, read_bundle, write_bundle
from nanonet.runtimes.classifier import Classifier, softmax
from nanonet.runtimes.errors import NanonetError

METHODS = ("dynamic", "static")
CALIBRATORS = ("minmax", "percentile", "entropy")
TARGETS = ("cpu", "tensorrt")
OUTLIER_MODES = ("auto", "always", "off")
WEIGHT_BITS = (8, 7)
OP_TYPES = ["MatMul", "Gemm"]


def _matmuls(model) -> dict[str, str]:
    """Weight-bearing MatMul/Gemm nodes -> the parameter they multiply by, e.g.
    'encoder.layers.0.attn.qkv' or 'head' (read from the exporter's node metadata)."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type in OP_TYPES and len(node.input) > 1 and node.input[1] in inits:
            meta = " ".join(p.value for p in node.metadata_props)
            m = re.search(r"%p_model_(\w+?)_weight", meta)
            out[node.name] = m.group(1).replace("_", ".") if m else node.name
    return out


def _layer_of(param: str) -> str | None:
    m = re.search(r"layers\.(\d+)\.", param)
    return m.group(1) if m else None


class _Feeds:
    """Padded, length-sorted batches of texts, tokenized as the runtime does."""

    def __init__(self, clf: Classifier, texts: list[str], batch_size: int = 16):
        ids = [e.ids for e in clf.tokenizer.encode_batch(texts)]
        order = np.argsort([len(x) for x in ids], kind="stable")
        self.batches = [clf.pad([ids[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]


def _reader(feeds: _Feeds, names: list[str]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds.batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {n: b[n] for n in names}

        def rewind(self):
            self.it = iter(feeds.batches)

    return Reader()


def _probs(path: Path, feeds: _Feeds, names: list[str], threads: int | None) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), ort_options(threads), providers=["CPUExecutionProvider"])
    return softmax(np.concatenate([s.run(["logits"], {n: b[n] for n in names})[0] for b in feeds.batches]))


def _quantize_packed_graph(src, clf: Classifier, texts: list[str], held: int, calibrator: str, min_agreement: float, work: Path,
                           threads: int | None, say: Callable[[str], None]) -> dict | None:  # fmt: skip
    """The TensorRT graph of the bundle (model.trt.onnx) with int8 Q/DQ, from the same
    calibration texts and under the same agreement guard (calibrate/packed.py); None when
    the bundle has none."""
    from nanonet.calibrate.packed import packed_batches, quantize_packed

    if "model.trt.onnx" not in src.manifest.files:
        say("the bundle has no model.trt.onnx (export it with --trt): only model.onnx was quantized")
        return None
    calib = packed_batches(clf.tokenizer, texts[held:] or texts)
    check = packed_batches(clf.tokenizer, texts[:held]) if held else []
    record = quantize_packed(src.file("model.trt.onnx"), work / "model.trt.onnx", calib, check, work, threads, calibrator, min_agreement,
                             say)  # fmt: skip
    agreement = f", agreement with fp32 {record['agreement']:.3f} on {record['texts']} held-out texts" if check else ""
    kept = f", {len(record['kept_float'])} kept in float" if record["kept_float"] else ""
    say(f"model.trt.onnx: {record['quantized_matmuls']} matrix multiplications int8 (explicit Q/DQ, {calibrator} ranges){kept}{agreement}")
    return record


def quantize_bundle(bundle: str | Path, out: str | Path, calib: str | Path | None = None, method: str | None = None,
                    calibrator: str = "minmax", samples: int = 1024, seed: int = 0, target: str = "cpu",
                    min_agreement: float = 0.99, text_col: str = "text", threads: int | None = None,
                    say: Callable[[str], None] = print, smooth: float = 0.0, outliers: str = "auto",
                    outlier_ratio: float = 6.0, weight_bits: int = 8) -> dict:  # fmt: skip
    """Quantize `bundle` into `out`; returns the new manifest (with a `quantization` record)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method is not None and method not in METHODS:
        raise NanonetError(f"--method: must be one of {', '.join(METHODS)}, got '{method}'")
    if calibrator not in CALIBRATORS:
        raise NanonetError(f"--calibrator: must be one of {', '.join(CALIBRATORS)}, got '{calibrator}'")
    if target not in TARGETS:
        raise NanonetError(f"--target: must be one of {', '.join(TARGETS)}, got '{target}'")
    if not 0 <= smooth < 1:
        raise NanonetError(f"--smooth: must be in [0, 1) (0 turns smoothing off), got {smooth}")
    if outliers not in OUTLIER_MODES:
        raise NanonetError(f"--outliers: must be one of {', '.join(OUTLIER_MODES)}, got '{outliers}'")
    if outlier_ratio <= 1:
        raise NanonetError(f"outlier_ratio: must be > 1 (times the median channel's range), got {outlier_ratio}")
    if weight_bits not in WEIGHT_BITS:
        raise NanonetError(f"--weight-bits: must be 8 or 7, got {weight_bits}")
    if weight_bits == 7 and method == "static":
        raise NanonetError("--weight-bits 7: for dynamic quantization (static graphs keep 8-bit weights)")
    if not 0 < min_agreement <= 1:
        raise NanonetError(f"--min-agreement: must be in (0, 1], got {min_agreement}")
    src = read_bundle(bundle)
    if src.manifest.precision != "fp32":
        raise NanonetError(f"{bundle}: already quantized ({src.manifest.precision}); quantize the fp32 bundle")
    texts = sample_texts(calib, samples, seed, text_col) if calib is not None else []
    if method is None:
        # dynamic by default: measured faster and closer to fp32 than static on this project's
        # students (bench/quantization.py); calibration text then checks agreement and drives
        # mixed precision
        method = "dynamic"
        if not texts:
            say("no --calib file: using dynamic quantization (weights int8, activations quantized at run time); "
                "agreement with fp32 is not checked")  # fmt: skip
    if method == "static" and not texts:
        raise NanonetError("--method static needs calibration text: pass --calib FILE")
    if target == "tensorrt" and method != "static":
        raise NanonetError("--target tensorrt needs static quantization with calibration text (--calib FILE)")
    if outliers == "always" and (method != "dynamic" or not texts or smooth > 0):
        raise NanonetError("--outliers always: needs dynamic quantization with --calib FILE and no --smooth")

    clf = Classifier(src, threads=threads)
    names = list(src.manifest.inputs)
    # half the calibration texts judge agreement, half give the ranges (smoothing, outlier
    # split, static): agreement from a slice too small to see 1% of flips let a 97% bundle pass
    held = max(1, len(texts) // 2) if len(texts) > 1 else 0
    calib_feeds = _Feeds(clf, texts[held:] or texts) if texts else None
    # judged in the runtime's default batches: with activations quantized per tensor at run
    # time, which texts share a batch moves a few borderline predictions
    check_feeds = _Feeds(clf, texts[:held], batch_size=32) if held else None

    work = Path(tempfile.mkdtemp(prefix="nanonet-quantize-"))
    root_level = logging.getLogger().level
    try:
        model = onnx.load(str(src.file("model.onnx")))
        fixed_values = finite_mask(model)
        embedding = quantize_embedding_table(model)
        fp32 = work / "fp32.onnx"
        onnx.save(model, str(fp32))
        reference = fp32  # what agreement is measured against: the graph before smoothing or splitting
        matmuls = _matmuls(model)
        smoothing = split = None
        always_float: list[str] = []  # the outlier products: float by design, never quantized
        targets = [n.name for n in model.graph.node if n.name in matmuls and matmuls[n.name] != "head"]
        tensors = sorted({n.input[0] for n in model.graph.node if n.name in targets})
        if smooth > 0 and calib_feeds is not None and method == "dynamic":
            # move activation range into the per-channel weights (calibrate/smooth.py); for the
            # dynamic path, where activations get one range per tensor at run time
            ranges = activation_ranges(fp32, calib_feeds.batches, names, tensors, threads)
            smoothing = {"alpha": smooth, "matmuls": smooth_matmuls(model, targets, ranges, smooth)}
            fp32 = work / "smoothed.onnx"
            onnx.save(model, str(fp32))
        can_split = outliers != "off" and method == "dynamic" and calib_feeds is not None and smoothing is None

        def outlier_split(agreement_before: float | None):
            """The graph with its outlier channels multiplied apart (outliers.py), the names of
            the float products, and the manifest's record; None when no channel stands out."""
            ranges = activation_ranges(fp32, calib_feeds.batches, names, tensors, threads)
            channels, float_products = split_outliers(model, targets, ranges, outlier_ratio)
            if not channels:
                return None
            onnx.save(model, str(work / "split.onnx"))
            record = {"mode": outliers, "ratio": outlier_ratio, "channels": {matmuls[n]: c for n, c in channels.items()},
                      "agreement_before": agreement_before}  # fmt: skip
            return work / "split.onnx", float_products, record

        act_type = QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8
        cal_method = calibration_method(calibrator)
        options = {"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": target == "tensorrt",
                   # TensorRT takes Q/DQ on the inputs of weighted products and picks their output precision itself
                   "OpTypesToExcludeOutputQuantization": OP_TYPES if target == "tensorrt" else []}
        ranges_cache = work / "ranges.json"  # calibrated once, read by every quantize_static call below
        if method == "static" and calibrator in HISTOGRAM_CALIBRATORS:
            write_histogram_ranges(fp32, calib_feeds.batches, names, calibrator, OP_TYPES, ranges_cache)

        def run(path: Path, exclude: list[str], only: list[str] | None = None) -> None:
            if method == "dynamic":
                quantize_dynamic(fp32, path, op_types_to_quantize=OP_TYPES, per_channel=True, weight_type=QuantType.QInt8,
                                 reduce_range=weight_bits == 7,
                                 nodes_to_exclude=exclude + always_float, nodes_to_quantize=only,
                                 extra_options={"MatMulConstBOnly": True})  # fmt: skip
            else:
                quantize_static(fp32, path, _reader(calib_feeds, names), quant_format=QuantFormat.QDQ, op_types_to_quantize=OP_TYPES,
                                per_channel=True, activation_type=act_type, weight_type=QuantType.QInt8, calibrate_method=cal_method,
                                nodes_to_exclude=exclude, nodes_to_quantize=only, extra_options=options,
                                calibration_cache_path=str(ranges_cache))  # fmt: skip
                graph = onnx.load(str(path))
                if float_outputs(graph):
                    onnx.save(graph, str(path))

        # ONNX Runtime's quantizer suggests shape pre-processing on every call (root logger);
        # the graph's shapes are already inferred by the exporter
        logging.getLogger().setLevel(logging.ERROR)
        int8 = work / "model.onnx"
        kept: list[str] = []
        if can_split and outliers == "always":
            fp32, always_float, split = outlier_split(None) or (fp32, always_float, split)
        run(int8, kept)
        agreement = sensitivity = None
        if check_feeds is not None:
            ref = _probs(reference, check_feeds, names, threads)
            agree = lambda p: float((_probs(p, check_feeds, names, threads).argmax(-1) == ref.argmax(-1)).mean())  # noqa: E731
            agreement = agree(int8)
            done = outlier_split(agreement) if agreement < min_agreement and can_split and outliers == "auto" else None
            if done:  # the cheap remedy first
                unsplit = fp32
                fp32, always_float, split = done
                run(int8, kept)
                agreement = agree(int8)
                n_channels = sum(map(len, split["channels"].values()))
                say(f"agreement {split['agreement_before']:.3f} < {min_agreement}: {n_channels} outlier channels of "
                    f"{len(split['channels'])} matrix multiplications moved to float: agreement {agreement:.3f}")  # fmt: skip
                if agreement < split["agreement_before"]:  # it did not help: back to the plain graph
                    say("  the split lowered agreement: not kept")
                    fp32, always_float, agreement, split = unsplit, [], split["agreement_before"], None
                    run(int8, kept)
            if agreement < min_agreement:
                kept, sensitivity, agreement = keep_sensitive_in_float("model.onnx", matmuls, run,
                                                                       lambda p: _probs(p, check_feeds, names, threads), ref, agreement,
                                                                       min_agreement, int8, work, say)  # fmt: skip
        ops = census(int8)
        summary = check_quantized(ops, int8, expect_activations=method == "static")

        precision = f"int8-{method}" if not kept else "mixed"
        manifest = Manifest(**copy.deepcopy(src.manifest.__dict__))
        manifest.precision = precision
        for i, layer in manifest.layers.items():
            float_here = [matmuls[n] for n in kept if _layer_of(matmuls[n]) == i]
            layer["precision"] = "int8" if not float_here else ("fp32" if len(float_here) >= 4 else "mixed")
            layer["float_matmuls"] = float_here
            layer["outlier_channels"] = {k: c for k, c in (split or {}).get("channels", {}).items() if _layer_of(k) == i}
        manifest.quantization = {
            "method": method, "calibrator": calibrator if method == "static" else None, "target": target,
            "calibrator_options": HISTOGRAM_CALIBRATORS.get(calibrator) if method == "static" else None,
            "activations": None if method == "dynamic" else ("int8 symmetric" if target == "tensorrt" else "uint8"),
            "weights": "int8 per-channel symmetric" + (", 7-bit range" if weight_bits == 7 else ""), "weight_bits": weight_bits, "calibration": {"file": str(calib) if calib else None, "samples": len(texts) - held,
                                                                     "held_out": held, "seed": seed},
            "smoothing": smoothing, "outliers": split, "mask_value": MASK_VALUE if fixed_values else None, "embedding": embedding, "kept_float": [matmuls[n] for n in kept],
            "agreement_held_out": agreement, "min_agreement": min_agreement, "sensitivity": {matmuls[k]: v for k, v in (sensitivity or {}).items()},
            "census": summary, "source_bundle": {"path": str(Path(bundle).resolve()), "model_sha256": src.manifest.files["model.onnx"]["sha256"]},
        }  # fmt: skip
        files = {"model.onnx": int8, "tokenizer.json": src.file("tokenizer.json")}
        if target == "tensorrt":
            manifest.quantization["tensorrt_graph"] = _quantize_packed_graph(src, clf, texts, held, calibrator, min_agreement, work, threads, say)
            if manifest.quantization["tensorrt_graph"]:
                files["model.trt.onnx"] = work / "model.trt.onnx"
        write_bundle(out, manifest, files)
    finally:
        logging.getLogger().setLevel(root_level)
        shutil.rmtree(work, ignore_errors=True)
    return manifest.__dict__
