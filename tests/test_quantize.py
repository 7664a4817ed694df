"""Quantization and validation on a tiny exported model: every method runs and stays
close to fp32, the mask fix is in the graph, the census catches a float graph, validate
gates, bad calibration files get one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import WORDS, write_synthetic_data

import runtimes
from calibrate.graph import census, check_quantized, lowest_constants
from calibrate.quantize import quantize_bundle
from export.bundle import export_bundle
from nanonet.errors import NanonetError
from nanonet.model.checkpoint import make_student, save_checkpoint
from nanonet.model.encoder import NanoClassifier
from nanonet.model.hf import load_pretrained

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

LABELS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def setup(tiny_bert_dir, tmp_path_factory) -> dict:
    """A tiny BERT student (alternating attention) whose head separates the synthetic classes,
    exported; synthetic calibration and labeled test files."""
    root = tmp_path_factory.mktemp("quantize")
    data = write_synthetic_data(root / "data", {"train": 60, "test": 30})
    model, src = _fitted_model(tiny_bert_dir, data / "train.jsonl")
    ckpt = save_checkpoint(root / "ckpt", model, LABELS, src.path)
    export_bundle(ckpt, root / "fp32", max_length=48)
    return {"root": root, "fp32": root / "fp32", "train": data / "train.jsonl", "test": data / "test.jsonl", "model": model, "src": src}


def _fitted_model(teacher_dir: Path, train_file: Path):
    """The student with only its head fitted (logistic regression on frozen embeddings), so
    that accuracy means something and a damaged copy visibly loses it."""
    from tokenizers import Tokenizer

    from nanonet.model.packing import pack_sequences

    torch.manual_seed(0)
    src = load_pretrained(str(teacher_dir))
    model = NanoClassifier(make_student(src.encoder, [0, 2, 4], global_every=2, local_window=6), len(LABELS), src.pooling).eval()
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    tok = Tokenizer.from_file(str(src.tokenizer_file))
    batch = pack_sequences([e.ids for e in tok.encode_batch([r["text"] for r in rows])])
    y = torch.tensor([LABELS.index(r["label"]) for r in rows])
    with torch.no_grad():
        x = model.embed(batch)
    opt = torch.optim.Adam(model.head.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.head(x), y).backward()
        opt.step()
    return model, src


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def _probs(bundle: Path, texts: list[str]) -> np.ndarray:
    return runtimes.load(bundle).predict_proba(texts)


@pytest.mark.parametrize("kwargs", [
    dict(method="dynamic"),
    dict(method="static", calibrator="minmax"),
    dict(method="static", calibrator="percentile"),
    dict(method="static", calibrator="entropy"),
    dict(method="static", target="tensorrt"),
], ids=["dynamic", "static-minmax", "static-percentile", "static-entropy", "tensorrt-qdq"])  # fmt: skip
def test_each_method_runs_and_stays_close(setup, tmp_path, kwargs):
    calib = None if kwargs["method"] == "dynamic" else setup["train"]
    manifest = quantize_bundle(setup["fp32"], tmp_path / "q", calib, samples=100, say=lambda m: None, **kwargs)
    q = manifest["quantization"]
    assert manifest["precision"] in ("int8-dynamic", "int8-static", "mixed")
    assert q["census"]["quantized_matmuls"] > 0 or q["census"]["quantize_linear"] > 0
    texts = _texts(setup["test"])
    ref, got = _probs(setup["fp32"], texts), _probs(tmp_path / "q", texts)
    diff, agree = np.abs(ref - got), (ref.argmax(-1) == got.argmax(-1)).mean()
    assert diff.mean() < 0.05 and agree >= 0.85, (diff.mean(), agree)
    # the bundle stays a bundle: hashed files, the manifest says what happened
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert q["method"] == kwargs["method"]
    assert q["embedding"] is None  # a 100-row table is below the size worth quantizing


def test_tensorrt_target_is_symmetric_int8_qdq(setup, tmp_path):
    quantize_bundle(setup["fp32"], tmp_path / "q", setup["train"], method="static", target="tensorrt", samples=60, say=lambda m: None)
    graph = onnx.load(str(tmp_path / "q" / "model.onnx")).graph
    inits = {i.name: i for i in graph.initializer}
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes
    for n in q_nodes:  # activations: int8 with zero point 0 (symmetric)
        zp = onnx.numpy_helper.to_array(inits[n.input[2]])
        assert zp.dtype == np.int8 and not zp.any()


def test_int8_embedding_table_matches_the_float_one(setup, tmp_path):
    import onnxruntime as ort

    from calibrate.graph import quantize_embedding_table

    model = onnx.load(str(setup["fp32"] / "model.onnx"))
    done = quantize_embedding_table(model, min_rows=10)
    assert done["rows"] == 100 and done["max_abs_error"] < 0.01
    assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)
    onnx.save(model, str(tmp_path / "m.onnx"))
    ids = np.array([[2, 10, 20, 30, 3, 0], [2, 40, 50, 3, 0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["probs"], feeds)[0]  # noqa: E731
    got, ref = run(tmp_path / "m.onnx"), run(setup["fp32"] / "model.onnx")
    assert np.abs(got - ref).max() < 0.05 and (got.argmax(-1) == ref.argmax(-1)).all()


def test_mask_fill_value_is_made_finite(setup, tmp_path):
    assert lowest_constants(onnx.load(str(setup["fp32"] / "model.onnx"))) > 0  # the export uses finfo.min
    manifest = quantize_bundle(setup["fp32"], tmp_path / "q", setup["train"], method="static", samples=60, say=lambda m: None)
    assert lowest_constants(onnx.load(str(tmp_path / "q" / "model.onnx"))) == 0
    assert manifest["quantization"]["mask_value"] == -1e4


def test_census_catches_a_graph_left_in_float(setup):
    ops = census(setup["fp32"] / "model.onnx")
    with pytest.raises(NanonetError, match="no matrix multiplication was quantized"):
        check_quantized(ops, setup["fp32"] / "model.onnx", expect_activations=True)


def test_mixed_precision_keeps_sensitive_layers_in_float(setup, tmp_path):
    manifest = quantize_bundle(setup["fp32"], tmp_path / "q", setup["train"], method="static", samples=100, min_agreement=1.0,
                               say=lambda m: None)  # fmt: skip
    q = manifest["quantization"]
    assert len(q["sensitivity"]) == 3 * 4 + 1  # every weight matmul was scored (3 layers x 4, head)
    if q["agreement_held_out"] < 1.0 or q["kept_float"]:
        assert manifest["precision"] == "mixed" and q["kept_float"]
        kept_layers = {k.split(".")[2] for k in q["kept_float"] if k.startswith("encoder.layers.")}
        assert all(manifest["layers"][i]["precision"] in ("mixed", "fp32") for i in kept_layers)


def test_default_with_calibration_is_dynamic_with_an_agreement_check(setup, tmp_path):
    manifest = quantize_bundle(setup["fp32"], tmp_path / "q", setup["train"], samples=100, say=lambda m: None)
    q = manifest["quantization"]
    assert q["method"] == "dynamic" and q["calibration"]["held_out"] == 20
    assert q["agreement_held_out"] is not None and (q["agreement_held_out"] >= 0.99 or q["kept_float"])


def test_without_calibration_it_says_so_and_goes_dynamic(setup, tmp_path):
    said = []
    manifest = quantize_bundle(setup["fp32"], tmp_path / "q", None, say=said.append)
    assert manifest["precision"] == "int8-dynamic" and "no --calib file" in said[0]


@pytest.mark.parametrize("content, message", [("", "no calibration text"), (b"\xff\xfe\x00bad", "not UTF-8")])
def test_bad_calibration_file_is_one_line_error(setup, tmp_path, content, message):
    bad = tmp_path / "calib.txt"
    bad.write_bytes(content.encode() if isinstance(content, str) else content)
    done = subprocess.run([sys.executable, "-m", "nanonet", "quantize", str(setup["fp32"]), "--out", str(tmp_path / "q"), "--calib", str(bad)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "q").exists()


def _validate(candidate: Path, reference: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nanonet", "validate", str(candidate), "--reference", str(reference),
                           "--data", str(data), "--json", *extra], capture_output=True, text=True, timeout=300)  # fmt: skip


def test_validate_passes_a_bundle_against_itself(setup, tmp_path):
    done = _validate(setup["fp32"], setup["fp32"], setup["test"], "--plot", str(tmp_path / "v.png"))
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["agreement"] == 1.0 and r["accuracy_drop"] == 0.0 and r["flipped"] == 0 and r["passed"]
    assert set(r["per_class"]) == set(LABELS)
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_fails_a_damaged_candidate(setup, tmp_path):
    # the same model with its head's rows rolled: every class now scores as another one
    model = setup["model"]
    damaged = NanoClassifier(model.encoder, len(LABELS), model.pooling)
    with torch.no_grad():
        damaged.head.weight.copy_(model.head.weight.roll(1, dims=0))
        damaged.head.bias.copy_(model.head.bias.roll(1, dims=0))
    export_bundle(save_checkpoint(tmp_path / "ckpt", damaged, LABELS, setup["src"].path), tmp_path / "damaged", max_length=48)
    done = _validate(tmp_path / "damaged", setup["fp32"], setup["test"], "--max-drop", "0.01")
    r = json.loads(done.stdout)
    assert r["reference"]["accuracy"] >= 0.45, r["reference"]  # the fitted head classifies (chance: 0.33)
    assert r["accuracy_drop"] > 0.1 and r["agreement"] < 0.2
    assert done.returncode == 1 and "failed: accuracy dropped" in done.stderr


def test_validate_rejects_unknown_labels(setup, tmp_path):
    data = tmp_path / "odd.jsonl"
    data.write_text(json.dumps({"text": " ".join(WORDS[:5]), "label": "omega"}) + "\n")
    done = _validate(setup["fp32"], setup["fp32"], data)
    assert done.returncode == 1 and "omega" in done.stderr and "Traceback" not in done.stderr


def test_smoothing_keeps_the_float_function_and_flattens_activations(setup, tmp_path):
    import onnxruntime as ort

    from calibrate.quantize import _Feeds, _matmuls
    from calibrate.smooth import activation_ranges, smooth_matmuls

    clf = runtimes.load(setup["fp32"])
    names = list(clf.bundle.manifest.inputs)
    batches = _Feeds(clf, _texts(setup["train"])).batches
    model = onnx.load(str(setup["fp32"] / "model.onnx"))
    targets = [n for n, p in _matmuls(model).items() if p != "head"]
    tensors = sorted({n.input[0] for n in model.graph.node if n.name in targets})
    ranges = activation_ranges(setup["fp32"] / "model.onnx", batches, names, tensors)
    assert set(ranges) == set(tensors) and all(r.ndim == 1 and (r > 0).all() for r in ranges.values())
    assert smooth_matmuls(model, targets, ranges, alpha=0.75) == len(targets)
    onnx.save(model, str(tmp_path / "smoothed.onnx"))
    run = lambda p: np.concatenate([ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["logits"], {n: b[n] for n in names})[0]
                                    for b in batches])  # noqa: E731
    np.testing.assert_allclose(run(tmp_path / "smoothed.onnx"), run(setup["fp32"] / "model.onnx"), atol=1e-4)
    # what each multiplication now sees has a flatter channel profile (max / median range)
    smoothed_names = [f"{t}_smoothed_for_{n.name}" for n in onnx.load(str(setup["fp32"] / "model.onnx")).graph.node
                      if n.name in targets for t in [n.input[0]]]  # fmt: skip
    after = activation_ranges(tmp_path / "smoothed.onnx", batches, names, smoothed_names)
    spread = lambda r: float(r.max() / np.median(r))  # noqa: E731
    before_spread = np.mean([spread(ranges[t]) for t in tensors])
    after_spread = np.mean([spread(r) for r in after.values()])
    assert after_spread < before_spread, (after_spread, before_spread)


def test_calibrated_quantization_records_smoothing(setup, tmp_path):
    manifest = quantize_bundle(setup["fp32"], tmp_path / "q", setup["train"], samples=100, smooth=0.75, say=lambda m: None)
    assert manifest["quantization"]["smoothing"] == {"alpha": 0.75, "matmuls": 12}  # 3 layers x (qkv, out, fc1, fc2)
    texts = _texts(setup["test"])
    ref, got = _probs(setup["fp32"], texts), _probs(tmp_path / "q", texts)
    assert np.abs(ref - got).mean() < 0.05 and (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.85
    off = quantize_bundle(setup["fp32"], tmp_path / "q0", setup["train"], samples=100, say=lambda m: None)
    assert off["quantization"]["smoothing"] is None  # opt-in
    with pytest.raises(NanonetError, match="--smooth"):
        quantize_bundle(setup["fp32"], tmp_path / "q1", setup["train"], smooth=1.5, say=lambda m: None)
