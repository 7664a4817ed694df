"""The engine check without TensorRT: stand-in engines (ONNX Runtime runs of the packed
graph with a deliberate fault, or in float16) against ONNX Runtime's run of the graph as
exported. An engine with TensorRT's attention at the wrong scale or window is refused at
every precision's bound; an honest float16 run passes the float16 bound."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from nanonet.runtimes.errors import NanonetError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime_extensions")

from nanonet.export.tensorrt.engine import network_graph  # noqa: E402
from nanonet.export.tensorrt.engine_check import check_engine, graph_facts, onnxruntime_reference  # noqa: E402
from nanonet.export.tensorrt.packed import export_packed  # noqa: E402
from nanonet.export.tensorrt.varlen_op import OP_TYPE  # noqa: E402
from nanonet.export.tensorrt.verify import packed_runner  # noqa: E402
from nanonet.model.checkpoint import make_student  # noqa: E402
from nanonet.model.encoder import NanoClassifier  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402

MAX_LENGTH = 48
PEAKED = 3.0  # query and key weights scaled by this: attention scores x9
WEIGHTED = 5.0  # the attention's output projection scaled by this


@pytest.fixture(scope="module")
def packed(tiny_bert_dir, tmp_path_factory):
    torch.manual_seed(2)
    src = load_pretrained(str(tiny_bert_dir))
    model = NanoClassifier(make_student(src.encoder, [0, 1, 2, 3], global_every=2, local_window=6), 3, src.pooling).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
        # a random init attends near uniformly and its residual stream drowns the attention;
        # as in a trained model, make the scores peaked and the attention weigh in each layer
        for layer in model.encoder.layers:
            layer.attn.qkv.weight[: 2 * layer.attn.qkv.in_features] *= PEAKED
            layer.attn.out.weight *= WEIGHTED
    path = tmp_path_factory.mktemp("engine-check") / "model.trt.onnx"
    export_packed(model, path)
    return model, path


def _session_run(graph, float16: bool = False):
    return packed_runner(model=graph, float16=float16)


def _with_attention(path, **changes):
    """The packed graph with every VarlenAttention node's attributes changed (a faulty engine)."""
    graph = copy.deepcopy(onnx.load(str(path)))
    for node in graph.graph.node:
        if node.op_type == OP_TYPE:
            for a in node.attribute:
                if a.name in changes:
                    a.CopyFrom(onnx.helper.make_attribute(a.name, changes[a.name](onnx.helper.get_attribute_value(a))))
    return graph


def test_graph_facts_read_the_windows_and_vocabulary(packed):
    model, path = packed
    windows, vocab = graph_facts(onnx.load(str(path)))
    assert windows == [model.config.window(i) for i in range(model.config.num_layers)] == [-1, 3, -1, 3]
    assert vocab == model.config.vocab_size


def test_the_reference_itself_passes_at_fp32(packed):
    _, path = packed
    windows, vocab = graph_facts(onnx.load(str(path)))
    reference = onnxruntime_reference(path)
    checks = check_engine(reference, reference, windows, vocab, MAX_LENGTH, "fp32", path)
    assert len(checks) == 3 and all(c["max_abs_diff"] == 0.0 for c in checks)
    assert max(c["tokens"] for c in checks) > 2 * 3 + 1  # one batch is longer than the local window


@pytest.mark.parametrize(
    "fault",
    [
        {"scale": lambda s: 1.0},  # the scale left out (TensorRT's attention defaults to none)
        {"scale": lambda s: s * s},  # applied twice
        {"window": lambda w: -1},  # local layers attending globally
        {"window": lambda w: 2 * w if w > 0 else w},  # the full window width taken for the half-window
    ],
    ids=["no-scale", "scale-twice", "local-as-global", "window-width"],
)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_a_faulty_engine_is_refused_with_the_figures(packed, fault, precision):
    _, path = packed
    windows, vocab = graph_facts(onnx.load(str(path)))
    faulty = _session_run(_with_attention(path, **fault))
    with pytest.raises(
        NanonetError,
        match=rf"the {precision} engine disagrees with ONNX Runtime on '.+': max abs logit diff .+ \(bound .+\); no model.plan was written$",
    ):
        check_engine(faulty, onnxruntime_reference(path), windows, vocab, MAX_LENGTH, precision, path)


def test_an_honest_float16_run_passes_the_fp16_bound(packed):
    _, path = packed
    windows, vocab = graph_facts(onnx.load(str(path)))
    g16 = onnx.load_from_string(network_graph(path, "jit", "fp16"))  # the graph an fp16 engine is built from
    checks = check_engine(_session_run(g16, float16=True), onnxruntime_reference(path), windows, vocab, MAX_LENGTH, "fp16", path)
    assert all(0 < c["max_abs_diff"] <= c["bound"] for c in checks)  # float16 differs, within the bound


def test_a_wrong_output_shape_is_refused(packed):
    _, path = packed
    windows, vocab = graph_facts(onnx.load(str(path)))
    reference = onnxruntime_reference(path)
    with pytest.raises(NanonetError, match="the engine returned logits of shape"):
        check_engine(lambda *a: reference(*a)[:-1], reference, windows, vocab, MAX_LENGTH, "fp32", path)
    with pytest.raises(NanonetError, match="max abs logit diff nan"):
        check_engine(lambda *a: np.full_like(reference(*a), np.nan), reference, windows, vocab, MAX_LENGTH, "fp32", path)
