"""The packed TensorRT graph without TensorRT: plugin nodes pass onnx.checker with the
schema registered, carry their attributes, and run through ONNX Runtime's reference op to
the torch student's logits; the runtime refuses bad cu_seqlens before any kernel; `export
--trt` without TensorRT writes the graph, exits non-zero and prints the engine command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MODERNBERT_WINDOW

from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.tensorrt import check_cu_seqlens, pack

# before the imports that need them, so that a missing extra skips the module
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime_extensions")

from nanonet.export.tensorrt.packed import example_inputs, export_packed  # noqa: E402
from nanonet.export.tensorrt.varlen_op import OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION, TRT_DOMAIN, register_schema  # noqa: E402
from nanonet.export.tensorrt.verify import packed_session  # noqa: E402
from nanonet.model.checkpoint import make_student, save_checkpoint  # noqa: E402
from nanonet.model.encoder import NanoClassifier  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402
from nanonet.model.packing import pack_sequences  # noqa: E402


def _model(source: Path, layers=None, **attention) -> NanoClassifier:
    torch.manual_seed(2)
    src = load_pretrained(str(source))
    enc = make_student(src.encoder, layers, **attention) if layers else src.encoder
    model = NanoClassifier(enc, 3, src.pooling).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module")
def bert_packed(tiny_bert_dir, tmp_path_factory):
    model = _model(tiny_bert_dir, [0, 1, 2, 3], global_every=2, local_window=6)
    path = tmp_path_factory.mktemp("trt") / "model.trt.onnx"
    return model, path, export_packed(model, path)


@pytest.fixture(scope="module")
def modernbert_packed(tiny_modernbert_dir, tmp_path_factory):
    model = _model(tiny_modernbert_dir)
    path = tmp_path_factory.mktemp("trt-modernbert") / "model.trt.onnx"
    return model, path, export_packed(model, path)


def test_checker_passes_with_the_plugin_schema(bert_packed):
    _, path, facts = bert_packed
    register_schema()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert facts["plugin_nodes"] == 4 and facts["inputs"] == ["input_ids", "cu_seqlens", "max_seqlen"]


def test_plugin_node_attributes_round_trip(bert_packed, tmp_path):
    model, path, _ = bert_packed
    saved = tmp_path / "again.onnx"
    onnx.save(onnx.load(str(path)), str(saved))  # serialize once more: attributes survive
    nodes = [n for n in onnx.load(str(saved)).graph.node if n.op_type == OP_TYPE]
    assert [n.domain for n in nodes] == [TRT_DOMAIN] * 4
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    cfg = model.config
    assert [a["window"] for a in attrs] == [cfg.window(i) for i in range(cfg.num_layers)] == [-1, 3, -1, 3]
    for a in attrs:
        assert (a["num_heads"], a["head_size"]) == (cfg.num_heads, cfg.head_size)
        assert a["scale"] == pytest.approx(cfg.head_size**-0.5)
        assert (a["plugin_namespace"], a["plugin_version"]) == (PLUGIN_NAMESPACE.encode(), PLUGIN_VERSION.encode())
        assert a["aot"] == 1  # TensorRT's parser takes the plugin's ahead-of-time kernel
    graph = onnx.load(str(saved)).graph
    types = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    assert types == {"input_ids": onnx.TensorProto.INT32, "cu_seqlens": onnx.TensorProto.INT32, "max_seqlen": onnx.TensorProto.INT32}


@pytest.mark.parametrize("which", ["bert_packed", "modernbert_packed"])
def test_reference_run_matches_torch(which, request):
    model, path, _ = request.getfixturevalue(which)
    session = packed_session(path)
    for lengths in ([5], [3, 30, 1, 17, 9], [24, 2, 11]):  # windows are 6 and 8 tokens: far shorter
        ids, cu, longest = example_inputs(lengths, model.config.vocab_size, seed=len(lengths))
        got = session.run(["logits"], {"input_ids": ids.numpy(), "cu_seqlens": cu.numpy(), "max_seqlen": longest.numpy()})[0]
        with torch.no_grad():
            ref = model(pack_sequences([ids[a:b].long() for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])).numpy()
        assert got.shape == (len(lengths), 3)
        assert np.abs(got - ref).max() <= 1e-4 and (got.argmax(-1) == ref.argmax(-1)).all()
    assert MODERNBERT_WINDOW < 24


@pytest.mark.parametrize("which", ["bert_packed", "modernbert_packed"])
def test_attention_expanded_to_standard_ops_runs_like_the_plugin(which, request):
    """What the int8 calibration of the packed graph runs on (no custom op, no torch)."""
    import onnxruntime as ort

    from nanonet.calibrate.packed import ATTENTION_OP, collapse_attention, expand_attention

    model, path, _ = request.getfixturevalue(which)
    assert ATTENTION_OP == OP_TYPE
    graph = onnx.load(str(path))
    expanded = expand_attention(graph)
    assert not [n for n in expanded.graph.node if n.op_type == OP_TYPE]
    plain = ort.InferenceSession(expanded.SerializeToString(), providers=["CPUExecutionProvider"])
    plugin = packed_session(path)
    for lengths in ([5], [3, 30, 1, 17, 9], [24, 2, 11]):  # windows of 6 and 8 tokens: far shorter
        ids, cu, longest = example_inputs(lengths, model.config.vocab_size, seed=len(lengths))
        feeds = {"input_ids": ids.numpy(), "cu_seqlens": cu.numpy(), "max_seqlen": longest.numpy()}
        assert np.abs(plain.run(["logits"], feeds)[0] - plugin.run(["logits"], feeds)[0]).max() <= 1e-5
    back = collapse_attention(expanded, graph)  # the plugin nodes return, everything else unchanged
    assert [n.op_type for n in back.graph.node] == [n.op_type for n in graph.graph.node]
    assert [n.attribute for n in back.graph.node if n.op_type == OP_TYPE] == [n.attribute for n in graph.graph.node if n.op_type == OP_TYPE]
    assert {i.name for i in back.graph.initializer} == {i.name for i in graph.graph.initializer}


def test_native_attention_is_chosen_from_tensorrt_11_1_and_int8_needs_a_quantized_graph(bert_packed):
    from nanonet.export.tensorrt.engine import network_graph
    from nanonet.export.tensorrt.native_attention import native_attention_available

    assert [native_attention_available(v) for v in ("10.14.1", "11.0.0", "11.1.0", "12.0")] == [False, False, True, True]
    _, path, _ = bert_packed
    with pytest.raises(NanonetError, match="int8 engine needs the graph quantized"):
        network_graph(path, "jit", "int8")


_NATIVE_REFERENCE = False


def _register_native_reference() -> None:
    """TensorRT's packed attention (TRT_Attention) as an onnxruntime-extensions op, from the
    plugin's numpy reference: q, k, v [T, heads, head size] and the cumulative lengths."""
    global _NATIVE_REFERENCE
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    from nanonet.export.tensorrt.varlen_op import reference

    if _NATIVE_REFERENCE:
        return

    @onnx_op(
        op_type="TRT_Attention",
        inputs=[PyCustomOpDef.dt_float] * 3 + [PyCustomOpDef.dt_int32],
        outputs=[PyCustomOpDef.dt_float],
        attrs={
            "query_form": PyCustomOpDef.dt_string,
            "kv_form": PyCustomOpDef.dt_string,
            "scale": PyCustomOpDef.dt_float,
            "is_causal": PyCustomOpDef.dt_int64,
        },
    )
    def _native(q, k, v, lengths, **attrs):
        T, nh, hs = q.shape
        qkv = np.concatenate([q.reshape(T, -1), k.reshape(T, -1), v.reshape(T, -1)], axis=1)
        return reference(qkv, lengths, nh, hs, float(attrs["scale"]), -1).reshape(T, nh, hs)

    _NATIVE_REFERENCE = True


@pytest.mark.parametrize("which", ["bert_packed", "modernbert_packed"])
def test_global_layers_on_tensorrt_native_packed_attention(which, request):
    """TensorRT >= 11.1: global layers become TRT_Attention (packed Q/K/V, cu_seqlens as the
    cumulative lengths), local layers keep the plugin; the rewritten graph, run with a
    reference for the native layer, still gives the torch student's logits."""
    import onnxruntime as ort

    from nanonet.export.tensorrt.engine import network_graph
    from nanonet.export.tensorrt.native_attention import NATIVE_DOMAIN, NATIVE_OP
    from nanonet.export.tensorrt.varlen_op import ORT_DOMAIN, for_onnxruntime, register_ort_reference

    model, path, _ = request.getfixturevalue(which)
    g = onnx.load_from_string(network_graph(path, "jit", "fp32", native=True))
    cfg = model.config
    globals_ = [i for i in range(cfg.num_layers) if cfg.window(i) < 0]
    native = [n for n in g.graph.node if n.op_type == NATIVE_OP]
    assert len(native) == len(globals_) and all(n.domain == NATIVE_DOMAIN for n in native)
    assert len([n for n in g.graph.node if n.op_type == OP_TYPE]) == cfg.num_layers - len(globals_)  # local layers: the plugin
    for n in native:
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        assert (a["query_form"], a["kv_form"], a["is_causal"], a["TRT_decomposable"]) == (b"packed_nhd", b"packed_nhd", 0, 1)
        assert a["scale"] == pytest.approx(cfg.head_size**-0.5)
        assert list(n.input[3:]) == ["", "", "", "cu_seqlens", "cu_seqlens"]  # no mask or cache; lengths at 6 and 7
    # run it: the native op on a reference, its optional empty inputs dropped for that
    _register_native_reference()
    g = for_onnxruntime(g)
    for n in g.graph.node:
        if n.op_type == NATIVE_OP:
            n.domain = ORT_DOMAIN
            kept = [*n.input[:3], n.input[6]]
            del n.input[:]
            n.input.extend(kept)
    opsets = [o for o in g.opset_import if o.domain != NATIVE_DOMAIN]
    del g.opset_import[:]
    g.opset_import.extend(opsets)
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(register_ort_reference())
    session = ort.InferenceSession(g.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    for lengths in ([3, 30, 1, 17, 9], [24, 2, 11]):
        ids, cu, longest = example_inputs(lengths, cfg.vocab_size, seed=len(lengths))
        got = session.run(["logits"], {"input_ids": ids.numpy(), "cu_seqlens": cu.numpy(), "max_seqlen": longest.numpy()})[0]
        with torch.no_grad():
            ref = model(pack_sequences([ids[a:b].long() for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])).numpy()
        assert np.abs(got - ref).max() <= 1e-4 and (got.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize("which", ["bert_packed", "modernbert_packed"])
def test_float16_graph_for_a_strongly_typed_engine(which, request, tmp_path):
    from nanonet.export.tensorrt.engine import network_graph

    model, path, _ = request.getfixturevalue(which)
    register_schema()
    g16 = onnx.load_from_string(network_graph(path, "jit", "fp16"))  # the graph TensorRT parses for an fp16 engine
    onnx.checker.check_model(g16)
    F, H = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    inits = {i.name: i.data_type for i in g16.graph.initializer}
    # the weights the activations meet are float16: every product's, every norm's, the token embeddings
    read = [i for n in g16.graph.node if n.op_type in ("Gemm", "MatMul", "LayerNormalization") for i in n.input if i in inits]
    read += [n.input[0] for n in g16.graph.node if n.op_type == "Gather" and "word" in n.input[0]]
    assert len(read) > 10 and {inits[i] for i in read} == {H}
    # what positions alone decide stays float32 (the rotary angles: float16 would put an angle
    # near 500 rad off by up to 0.12 rad), and is cast to float16 where it meets the activations
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(g16).graph.value_info}
    trig = [n for n in g16.graph.node if n.op_type in ("Cos", "Sin")]
    assert len(trig) == (4 if which == "modernbert_packed" else 0) and all(types[n.input[0]] == F for n in trig)
    assert all(a.i != 0 for n in g16.graph.node if n.op_type == "LayerNormalization" for a in n.attribute if a.name == "stash_type")
    assert [o.type.tensor_type.elem_type for o in g16.graph.output] == [F] and g16.graph.node[-1].name == "logits_to_float32"
    session = packed_session(model=g16, float16=True)  # attention on the float32 reference between casts
    for lengths in ([3, 30, 1, 17, 9], [24, 2, 11]):
        ids, cu, longest = example_inputs(lengths, model.config.vocab_size, seed=len(lengths))
        got = session.run(["logits"], {"input_ids": ids.numpy(), "cu_seqlens": cu.numpy(), "max_seqlen": longest.numpy()})[0]
        with torch.no_grad():
            ref = model(pack_sequences([ids[a:b].long() for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])).numpy()
        # float16 keeps about 3 significant digits: the bound scales with the logits (up to ~6 here)
        assert got.dtype == np.float32 and np.abs(got - ref).max() <= 5e-3 * np.abs(ref).max()
        assert (got.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize(
    "cu, tokens, message",
    [
        ([0, 3, 2, 5], 5, "must increase at every step"),
        ([1, 3, 5], 5, "must start at 0"),
        ([0, 3, 5], 6, "ends at 5, but the batch has 6 tokens"),
        ([0, 3, 3, 5], 5, "must increase"),
        ([0, 300, 301], 301, "exceeds the engine's profile"),
    ],
)
def test_bad_cu_seqlens_are_refused_before_any_kernel(cu, tokens, message):
    with pytest.raises(NanonetError, match=message):
        check_cu_seqlens(np.array(cu, dtype=np.int32), tokens, max_seqlen=256)


def test_cu_seqlens_must_be_int32():
    with pytest.raises(NanonetError, match="int32"):
        check_cu_seqlens(np.array([0, 3], dtype=np.int64), 3)


def test_pack_removes_padding():
    ids = np.array([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]], dtype=np.int64)
    packed, cu, longest = pack({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    assert packed.tolist() == [2, 7, 8, 3, 2, 9, 3] and cu.tolist() == [0, 4, 7] and longest == 4
    check_cu_seqlens(cu, packed.size, max_seqlen=4)


def test_export_trt_without_tensorrt_writes_the_graph_and_prints_the_engine_command(tiny_bert_dir, tmp_path):
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: export --trt builds the engine")
    model = _model(tiny_bert_dir, [0, 1], global_every=2, local_window=6)
    src = load_pretrained(str(tiny_bert_dir))
    save_checkpoint(tmp_path / "ckpt", model, ["a", "b", "c"], src.path)
    done = subprocess.run(
        [sys.executable, "-m", "nanonet", "export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "b"), "--trt", "--max-length", "48"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "model.trt.onnx" in done.stderr and f"nanonet engine {tmp_path / 'b'}" in done.stderr.replace("\n", " ")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "model.trt.onnx" in manifest["files"] and manifest["export"]["tensorrt"]["plugin_nodes"] == 2
    assert all(c["max_abs_diff"] <= 1e-4 for c in manifest["export"]["tensorrt"]["verification"])
    done = subprocess.run([sys.executable, "-m", "nanonet", "engine", str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "TensorRT is not installed" in done.stderr and "Traceback" not in done.stderr


def _trt_bundle(teacher_dir: Path, tmp_path: Path) -> Path:
    """A two-layer student (one global, one local layer, heads of 16) exported with --trt."""
    from nanonet.export.bundle import export_bundle

    model = _model(teacher_dir, [0, 1], global_every=2, local_window=6)
    save_checkpoint(tmp_path / "ckpt", model, ["a", "b", "c"], load_pretrained(str(teacher_dir)).path)
    export_bundle(tmp_path / "ckpt", tmp_path / "b", max_length=48, trt=True)
    return tmp_path / "b"


def _trt_vs_ort(bundle: Path) -> float:
    from nanonet import runtimes

    texts = ["w1 w2 w3", "w10 " * 30, "w5"]
    trt_probs = runtimes.load(bundle, backend="tensorrt").predict_proba(texts)
    return float(np.abs(trt_probs - runtimes.load(bundle, backend="onnxruntime").predict_proba(texts)).max())


@pytest.mark.tensorrt
@pytest.mark.parametrize("plugin", ["aot", "jit"])
def test_engine_builds_and_matches_torch(plugin, tiny_bert_h16_dir, tmp_path):
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda")
    from nanonet import runtimes
    from nanonet.export.tensorrt.build import build_bundle_engine

    bundle = _trt_bundle(tiny_bert_h16_dir, tmp_path)
    result = build_bundle_engine(bundle, max_tokens=512, opt_tokens=128, max_batch=16, plugin=plugin)
    if plugin == "jit":  # a development engine: it needs the Python plugin in the process that runs it
        with pytest.raises(NanonetError, match="JIT attention plugin"):
            runtimes.load(bundle, backend="tensorrt")
        return
    # one AOT kernel per layer kind; from TensorRT 11.1 on, global layers use TensorRT's own attention
    assert sorted(k["window"] for k in result["kernels"]) == ([3] if result["native_global_attention"] else [-1, 3])
    assert _trt_vs_ort(bundle) < 2e-2  # fp16 engine vs fp32 CPU graph


@pytest.mark.tensorrt
def test_int8_engine_from_a_tensorrt_qdq_bundle(tiny_bert_h16_dir, tmp_path):
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda")
    from conftest import write_synthetic_data

    from nanonet.calibrate.quantize import quantize_bundle
    from nanonet.export.tensorrt.build import build_bundle_engine

    bundle = _trt_bundle(tiny_bert_h16_dir, tmp_path)
    data = write_synthetic_data(tmp_path / "data", {"train": 60})
    quantize_bundle(
        bundle, tmp_path / "q", data / "train.jsonl", method="static", target="tensorrt", samples=60, say=lambda m: None, min_agreement=0.5
    )
    assert build_bundle_engine(tmp_path / "q", max_tokens=512, opt_tokens=128, max_batch=16)["precision"] == "int8"
    assert _trt_vs_ort(tmp_path / "q") < 0.1  # the same Q/DQ: TensorRT's int8 kernels vs ONNX Runtime's
