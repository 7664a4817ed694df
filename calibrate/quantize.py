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
  texts and under the same agreement guard (packed.py): that is the graph
  `nanonet engine` builds an int8 engine from.

The attention mask's fill value is made finite before calibration (see graph.py), and the
operator census of the optimized graph must show quantized matrix multiplications.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nanonet.calibrate.data import sample_texts
from nanonet.calibrate.feeds import packed_batches, padded_batches, probabilities
from nanonet.calibrate.graph import MASK_VALUE, census, check_quantized, finite_mask, quantize_embedding_table
from nanonet.calibrate.mixed import keep_sensitive_in_float
from nanonet.calibrate.outliers import split_outliers
from nanonet.calibrate.packed import quantize_packed
from nanonet.calibrate.ranges import HISTOGRAM_CALIBRATORS
from nanonet.calibrate.smooth import activation_ranges, smooth_matmuls
from nanonet.calibrate.static import OP_TYPES, calibrate_ranges, quantize_qdq
from nanonet.runtimes.bundle import Bundle, Manifest, read_bundle, write_bundle
from nanonet.runtimes.classifier import Classifier
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import work_dir
from nanonet.runtimes.metrics import agreement

METHODS = ("dynamic", "static")
CALIBRATORS = ("minmax", "percentile", "entropy")
TARGETS = ("cpu", "tensorrt")
OUTLIER_MODES = ("auto", "always", "off")
WEIGHT_BITS = (8, 7)


@dataclass
class QuantizeSettings:
    """Every setting of `nanonet quantize`, one documented field each."""

    calib: str | Path | None = None
    """Unlabeled calibration text (JSONL, CSV, TSV or text). Without it: dynamic quantization, agreement not checked."""
    method: str | None = None
    """dynamic | static (needs `calib`); None: dynamic, measured faster and closer to fp32 (bench/quantization.py)."""
    calibrator: str = "minmax"
    """Static activation ranges: minmax | percentile | entropy (calibrate/ranges.py)."""
    samples: int = 1024
    """Calibration texts sampled from `calib`; half give the ranges, half are held out to check agreement."""
    seed: int = 0
    """Seeds the calibration sample."""
    target: str = "cpu"
    """cpu (ONNX Runtime) | tensorrt: explicit symmetric int8 Q/DQ, for model.onnx and model.trt.onnx."""
    min_agreement: float = 0.99
    """Agreement with fp32 on the held-out texts below which the remedies start (outlier split, then mixed precision)."""
    text_col: str = "text"
    """Column holding the text in `calib`."""
    threads: int | None = None
    """CPU threads for ONNX Runtime while calibrating and checking."""
    smooth: float = 0.0
    """SmoothQuant alpha with `calib` (dynamic), e.g. 0.75; 0: off."""
    outliers: str = "auto"
    """auto | always | off: input channels whose range exceeds `outlier_ratio` x the median channel's multiply in float
    (dynamic, with `calib`); auto: only when agreement falls short."""
    outlier_ratio: float = 6.0
    """What makes a channel an outlier: its calibrated range over the median channel's."""
    weight_bits: int = 8
    """8 | 7 (dynamic): 7-bit weights keep the fast integer kernels on x86 CPUs without VNNI."""

    def validate(self) -> None:
        """One-line errors naming the flag, for every setting that is wrong on its own."""
        if self.method is not None and self.method not in METHODS:
            raise NanonetError(f"--method: must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.calibrator not in CALIBRATORS:
            raise NanonetError(f"--calibrator: must be one of {', '.join(CALIBRATORS)}, got '{self.calibrator}'")
        if self.target not in TARGETS:
            raise NanonetError(f"--target: must be one of {', '.join(TARGETS)}, got '{self.target}'")
        if not 0 <= self.smooth < 1:
            raise NanonetError(f"--smooth: must be in [0, 1) (0 turns smoothing off), got {self.smooth}")
        if self.outliers not in OUTLIER_MODES:
            raise NanonetError(f"--outliers: must be one of {', '.join(OUTLIER_MODES)}, got '{self.outliers}'")
        if self.outlier_ratio <= 1:
            raise NanonetError(f"outlier_ratio: must be > 1 (times the median channel's range), got {self.outlier_ratio}")
        if self.weight_bits not in WEIGHT_BITS:
            raise NanonetError(f"--weight-bits: must be 8 or 7, got {self.weight_bits}")
        if self.weight_bits == 7 and self.method == "static":
            raise NanonetError("--weight-bits 7: for dynamic quantization (static graphs keep 8-bit weights)")
        if not 0 < self.min_agreement <= 1:
            raise NanonetError(f"--min-agreement: must be in (0, 1], got {self.min_agreement}")

    def choose_method(self, have_texts: bool, say: Callable[[str], None]) -> str:
        """The method to run, given whether there is calibration text; settings that need it are refused without it."""
        method = self.method
        if method is None:
            # dynamic by default: measured faster and closer to fp32 than static on this project's
            # students (bench/quantization.py); calibration text then checks agreement and drives
            # mixed precision
            method = "dynamic"
            if not have_texts:
                say(
                    "no --calib file: using dynamic quantization (weights int8, activations quantized at run time); "
                    "agreement with fp32 is not checked"
                )
        if method == "static" and not have_texts:
            raise NanonetError("--method static needs calibration text: pass --calib FILE")
        if self.target == "tensorrt" and method != "static":
            raise NanonetError("--target tensorrt needs static quantization with calibration text (--calib FILE)")
        if self.outliers == "always" and (method != "dynamic" or not have_texts or self.smooth > 0):
            raise NanonetError("--outliers always: needs dynamic quantization with --calib FILE and no --smooth")
        return method


def quantize_bundle(
    bundle: str | Path, out: str | Path, calib: str | Path | None = None, say: Callable[[str], None] = print, **settings
) -> dict:
    """Quantize `bundle` into `out`; returns the new manifest (with a `quantization` record).
    `settings` are QuantizeSettings fields: quantize_bundle(b, out, calib, method="static")."""
    s = QuantizeSettings(calib=calib, **settings)
    s.validate()
    src = read_bundle(bundle)
    if src.manifest.precision != "fp32":
        raise NanonetError(f"{bundle}: already quantized ({src.manifest.precision}); quantize the fp32 bundle")
    texts = sample_texts(calib, s.samples, s.seed, s.text_col) if calib is not None else []
    method = s.choose_method(bool(texts), say)
    root_level = logging.getLogger().level
    # ONNX Runtime's quantizer suggests shape pre-processing on every call (root logger);
    # the graph's shapes are already inferred by the exporter
    logging.getLogger().setLevel(logging.ERROR)
    try:
        # built beside the new bundle (one filesystem), removed on every exit
        with work_dir(out, "quantize") as work:
            job = Job.prepare(src, s, method, texts, work)
            job.transform(say)
            int8 = work / "model.onnx"
            kept, sensitivity, reached = job.quantize_checked(int8, say)
            manifest = job.manifest(Path(bundle), kept, sensitivity, reached, census(int8), int8)
            files = {"model.onnx": int8, "tokenizer.json": src.file("tokenizer.json")}
            if s.target == "tensorrt":
                manifest.quantization["tensorrt_graph"] = job.quantize_packed_graph(say)
                if manifest.quantization["tensorrt_graph"]:
                    files["model.trt.onnx"] = work / "model.trt.onnx"
            write_bundle(out, manifest, files)
    finally:
        logging.getLogger().setLevel(root_level)
    return manifest.__dict__


def weight_matmuls(model) -> dict[str, str]:
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


@dataclass
class Job:
    """One bundle's quantization: the float graph and what is known of it, the calibration
    and check batches, and what the remedies changed (`source`, `always_float`, `split`)."""

    src: Bundle
    settings: QuantizeSettings
    method: str
    texts: list[str]
    held: int  # the first `held` texts judge agreement, the rest give the ranges
    work: Path
    model: object  # the float onnx.ModelProto (mask made finite, embedding table int8)
    reference: Path  # what agreement is measured against: the graph before smoothing or splitting
    matmuls: dict[str, str]  # node -> parameter name
    targets: list[str]  # the products smoothing and the outlier split may change: all but the head
    tensors: list[str]  # their inputs, whose activation ranges those two need
    fixed_values: int
    embedding: dict | None
    names: list[str]  # the graph's inputs
    calib_batches: list[dict] | None
    check_batches: list[dict] | None
    tokenizer: object  # the runtime's tokenizer, for the packed graph's batches
    source: Path  # the float graph the quantizer reads (after smoothing or an outlier split)
    always_float: list[str] = field(default_factory=list)  # the outlier products: float by design, never quantized
    smoothing: dict | None = None
    split: dict | None = None

    @classmethod
    def prepare(cls, src: Bundle, s: QuantizeSettings, method: str, texts: list[str], work: Path) -> Job:
        """The float graph with a finite attention mask and an int8 embedding table, and
        the calibration texts split into ranges and held-out checks, batched as the runtime batches."""
        import onnx

        clf = Classifier(src, threads=s.threads)
        # half the calibration texts judge agreement, half give the ranges (smoothing, outlier
        # split, static): agreement from a slice too small to see 1% of flips let a 97% bundle pass
        held = max(1, len(texts) // 2) if len(texts) > 1 else 0
        model = onnx.load_from_string(src.read_bytes("model.onnx"))  # the verified bytes; no external data read
        fixed_values = finite_mask(model)
        embedding = quantize_embedding_table(model)
        fp32 = work / "fp32.onnx"
        onnx.save(model, str(fp32))
        matmuls = weight_matmuls(model)
        targets = [n.name for n in model.graph.node if n.name in matmuls and matmuls[n.name] != "head"]
        return cls(
            src=src,
            settings=s,
            method=method,
            texts=texts,
            held=held,
            work=work,
            model=model,
            reference=fp32,
            matmuls=matmuls,
            targets=targets,
            tensors=sorted({n.input[0] for n in model.graph.node if n.name in targets}),
            fixed_values=fixed_values,
            embedding=embedding,
            names=list(src.manifest.inputs),
            calib_batches=padded_batches(clf, texts[held:] or texts) if texts else None,
            # judged in the runtime's default batches: with activations quantized per tensor at
            # run time, which texts share a batch moves a few borderline predictions
            check_batches=padded_batches(clf, texts[:held], batch_size=32) if held else None,
            tokenizer=clf.tokenizer,
            source=fp32,
        )

    @property
    def ranges_cache(self) -> Path:
        """Static calibration's ranges: calibrated once, read by every quantize_static call."""
        return self.work / "ranges.json"

    def _activation_ranges(self):
        return activation_ranges(self.source, self.calib_batches, self.names, self.tensors, self.settings.threads)

    def transform(self, say: Callable[[str], None]) -> None:
        """The float-preserving changes made before quantizing: smoothing (opt-in), an outlier
        split (--outliers always), and the static calibration's ranges."""
        import onnx

        s = self.settings
        if s.smooth > 0 and self.calib_batches is not None and self.method == "dynamic":
            # move activation range into the per-channel weights (calibrate/smooth.py); for the
            # dynamic path, where activations get one range per tensor at run time
            ranges = self._activation_ranges()
            self.smoothing = {"alpha": s.smooth, "matmuls": smooth_matmuls(self.model, self.targets, ranges, s.smooth)}
            self.source = self.work / "smoothed.onnx"
            onnx.save(self.model, str(self.source))
        if self.can_split and s.outliers == "always":
            self.split_outliers(None)
        if self.method == "static":
            calibrate_ranges(self.source, self.calib_batches, self.names, s.calibrator, self.ranges_cache)

    @property
    def can_split(self) -> bool:
        s = self.settings
        return s.outliers != "off" and self.method == "dynamic" and self.calib_batches is not None and self.smoothing is None

    def split_outliers(self, agreement_before: float | None) -> bool:
        """Multiply the outlier channels apart (outliers.py): the split graph becomes the
        source and its float products stay float. False when no channel stands out."""
        import onnx

        channels, float_products = split_outliers(self.model, self.targets, self._activation_ranges(), self.settings.outlier_ratio)
        if not channels:
            return False
        self.source = self.work / "split.onnx"
        onnx.save(self.model, str(self.source))
        self.always_float = float_products
        self.split = {
            "mode": self.settings.outliers,
            "ratio": self.settings.outlier_ratio,
            "channels": {self.matmuls[n]: c for n, c in channels.items()},
            "agreement_before": agreement_before,
        }
        return True

    def quantize(self, path: Path, exclude: list[str], only: list[str] | None = None) -> None:
        """The source graph quantized into `path`, without the `exclude` products (or only the `only` ones)."""
        s = self.settings
        if self.method == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                self.source,
                path,
                op_types_to_quantize=OP_TYPES,
                per_channel=True,
                weight_type=QuantType.QInt8,
                reduce_range=s.weight_bits == 7,
                nodes_to_exclude=exclude + self.always_float,
                nodes_to_quantize=only,
                extra_options={"MatMulConstBOnly": True},
            )
        else:
            quantize_qdq(
                self.source, path, self.calib_batches, self.names, s.calibrator, self.ranges_cache, s.target == "tensorrt", exclude, only
            )

    def probs(self, path: Path):
        return probabilities(path, self.check_batches, self.names, self.settings.threads)

    def quantize_checked(self, int8: Path, say: Callable[[str], None]) -> tuple[list[str], dict | None, float | None]:
        """Quantize into `int8`; with held-out texts, check agreement with fp32 and below
        --min-agreement apply the remedies in turn (outlier split, then mixed precision).
        Returns (products kept float, their sensitivities, the agreement reached)."""
        s = self.settings
        self.quantize(int8, [])
        if self.check_batches is None:
            return [], None, None
        ref = self.probs(self.reference)
        reached = agreement(self.probs(int8), ref)
        if reached < s.min_agreement and self.can_split and s.outliers == "auto":
            reached = self._try_outlier_split(int8, ref, reached, say)  # the cheap remedy first
        if reached >= s.min_agreement:
            return [], None, reached
        return keep_sensitive_in_float(
            "model.onnx", self.matmuls, self.quantize, self.probs, ref, reached, s.min_agreement, int8, self.work, say
        )

    def _try_outlier_split(self, int8: Path, ref, before: float, say: Callable[[str], None]) -> float:
        """The outlier split as a remedy: kept only when it raises agreement."""
        unsplit = self.source
        if not self.split_outliers(before):
            return before
        self.quantize(int8, [])
        reached = agreement(self.probs(int8), ref)
        n_channels = sum(map(len, self.split["channels"].values()))
        say(
            f"agreement {before:.3f} < {self.settings.min_agreement}: {n_channels} outlier channels of "
            f"{len(self.split['channels'])} matrix multiplications moved to float: agreement {reached:.3f}"
        )
        if reached >= before:
            return reached
        say("  the split lowered agreement: not kept")
        self.source, self.always_float, self.split = unsplit, [], None
        self.quantize(int8, [])
        return before

    def manifest(self, bundle: Path, kept: list[str], sensitivity: dict | None, reached: float | None, ops, int8: Path) -> Manifest:
        """The int8 bundle's manifest: the source's, with its precision per layer and the quantization record."""
        s, method, matmuls = self.settings, self.method, self.matmuls
        summary = check_quantized(ops, int8, expect_activations=method == "static")
        manifest = Manifest(**copy.deepcopy(self.src.manifest.__dict__))
        manifest.precision = f"int8-{method}" if not kept else "mixed"
        for i, layer in manifest.layers.items():
            float_here = [matmuls[n] for n in kept if _layer_of(matmuls[n]) == i]
            layer["precision"] = "int8" if not float_here else ("fp32" if len(float_here) >= 4 else "mixed")
            layer["float_matmuls"] = float_here
            layer["outlier_channels"] = {k: c for k, c in (self.split or {}).get("channels", {}).items() if _layer_of(k) == i}
        static = method == "static"
        manifest.quantization = {
            "method": method,
            "calibrator": s.calibrator if static else None,
            "target": s.target,
            "calibrator_options": HISTOGRAM_CALIBRATORS.get(s.calibrator) if static else None,
            "activations": None if not static else ("int8 symmetric" if s.target == "tensorrt" else "uint8"),
            "weights": "int8 per-channel symmetric" + (", 7-bit range" if s.weight_bits == 7 else ""),
            "weight_bits": s.weight_bits,
            "calibration": {
                "file": str(s.calib) if s.calib else None,
                "samples": len(self.texts) - self.held,
                "held_out": self.held,
                "seed": s.seed,
            },
            "smoothing": self.smoothing,
            "outliers": self.split,
            "mask_value": MASK_VALUE if self.fixed_values else None,
            "embedding": self.embedding,
            "kept_float": [matmuls[n] for n in kept],
            "agreement_held_out": reached,
            "min_agreement": s.min_agreement,
            "sensitivity": {matmuls[k]: v for k, v in (sensitivity or {}).items()},
            "census": summary,
            "source_bundle": {"path": str(bundle.resolve()), "model_sha256": self.src.manifest.files["model.onnx"]["sha256"]},
        }
        return manifest

    def quantize_packed_graph(self, say: Callable[[str], None]) -> dict | None:
        """The TensorRT graph of the bundle (model.trt.onnx) with int8 Q/DQ, from the same
        calibration texts and under the same agreement guard (packed.py); None when the
        bundle has none."""
        s, texts, held = self.settings, self.texts, self.held
        if "model.trt.onnx" not in self.src.manifest.files:
            say("the bundle has no model.trt.onnx (export it with --trt): only model.onnx was quantized")
            return None
        calib = packed_batches(self.tokenizer, texts[held:] or texts)
        check = packed_batches(self.tokenizer, texts[:held]) if held else []
        record = quantize_packed(
            self.src.file("model.trt.onnx"),
            self.work / "model.trt.onnx",
            calib,
            check,
            self.work,
            s.threads,
            s.calibrator,
            s.min_agreement,
            say,
        )
        agreed = f", agreement with fp32 {record['agreement']:.3f} on {record['texts']} held-out texts" if check else ""
        kept = f", {len(record['kept_float'])} kept in float" if record["kept_float"] else ""
        say(
            f"model.trt.onnx: {record['quantized_matmuls']} matrix multiplications int8 (explicit Q/DQ, {s.calibrator} ranges){kept}{agreed}"
        )
        return record
