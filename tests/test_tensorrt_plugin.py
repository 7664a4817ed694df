"""The VarlenAttention plugin against TensorRT's own plugin package, on a CPU.

`tensorrt.plugin` (registration, signature validation, attribute decoding, autotune
parsing) is plain Python in the `tensorrt-cu12-bindings` wheel; these tests import it
against a stand-in for the compiled module (tests/tensorrt_standin.py), so the checks the
plugin must pass are NVIDIA's. What they cannot reach: the engine build and the kernels
(tests/test_tensorrt_graph.py, marked `tensorrt`).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from tensorrt_standin import bindings_plugin_dir, plugin_package

pytestmark = pytest.mark.skipif(bindings_plugin_dir() is None, reason="needs the tensorrt-cu12-bindings wheel (make install)")

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("triton")

from nanonet.export.tensorrt import plugin  # noqa: E402
from nanonet.export.tensorrt.packed import export_packed  # noqa: E402
from nanonet.export.tensorrt.varlen_op import OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION  # noqa: E402
from nanonet.model.checkpoint import make_student  # noqa: E402
from nanonet.model.encoder import NanoClassifier  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402


@pytest.fixture
def trt(monkeypatch):
    """(tensorrt stand-in, the wheel's tensorrt.plugin) with the plugin registered in them."""
    monkeypatch.setattr(plugin, "_REGISTERED", False)
    with plugin_package() as (trt, trtp):
        plugin.register_plugin()
        yield trt, trtp


@pytest.fixture(scope="module")
def plugin_nodes(tiny_bert_dir, tmp_path_factory) -> list[dict]:
    """The attributes of each VarlenAttention node of an exported packed graph (global and local layers)."""
    src = load_pretrained(str(tiny_bert_dir))
    model = NanoClassifier(make_student(src.encoder, [0, 1, 2, 3], global_every=2, local_window=6), 3, src.pooling).eval()
    path = tmp_path_factory.mktemp("trt-plugin") / "model.trt.onnx"
    export_packed(model, path)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == OP_TYPE]
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]


def _registered(trtp):
    from tensorrt.plugin._lib import QDP_REGISTRY

    return QDP_REGISTRY[plugin.PLUGIN_ID]


def test_tensorrt_accepts_the_plugin_and_both_implementations(trt):
    _, trtp = trt
    d = _registered(trtp)
    assert d.input_tensor_names == ["qkv", "cu_seqlens", "max_seqlen"]
    assert d.input_attrs == {"num_heads": int, "head_size": int, "scale": float, "window": int}
    assert d.num_outputs == 1
    assert d.impl_func is not None and d.aot_impl_func is not None and d.autotune_func is not None
    # both implementations read every attribute: TensorRT passes only these to them
    assert d.impl_attr_names == d.aot_impl_attr_names == ["num_heads", "head_size", "scale", "window"]


def test_postponed_annotations_are_what_tensorrt_refuses(trt, tmp_path):
    """The failure this module guards against: with `from __future__ import annotations` (as
    plugin.py once had) every annotation is a string and TensorRT's register() raises."""
    _, trtp = trt
    source = textwrap.dedent(
        """
        from __future__ import annotations
        import tensorrt.plugin as trtp

        @trtp.register("nanonet_test::Postponed")
        def desc(x: trtp.TensorDesc, n: int) -> trtp.TensorDesc:
            return x.like()
        """
    )
    with pytest.raises(ValueError, match="TensorDescs args should come first"):
        exec(compile(source, str(tmp_path / "postponed.py"), "exec"), {})


def test_the_creator_declares_the_fields_of_the_exported_nodes(trt, plugin_nodes):
    trt_mod, _ = trt
    creator = trt_mod.registry.get_creator(OP_TYPE, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    assert creator is not None, "no creator under the op type, version and namespace the ONNX nodes name"
    fields = {f.name: f.type for f in creator.field_names}
    T = trt_mod.PluginFieldType
    assert fields == {"num_heads": T.INT64, "head_size": T.INT64, "scale": T.FLOAT64, "window": T.INT64}
    for node in plugin_nodes:
        # the parser looks the creator up by these and hands over the node's attributes the creator declares
        assert (node["plugin_namespace"].decode(), node["plugin_version"].decode()) == (PLUGIN_NAMESPACE, PLUGIN_VERSION)
        assert set(fields) <= set(node)


def _fields_from(trt_mod, creator, node: dict) -> list:
    """A PluginFieldCollection as TensorRT's ONNX parser builds it: each field the creator declares,
    from the node's attribute of that name, in the declared type."""
    T = trt_mod.PluginFieldType
    as_numpy = {T.INT64: np.int64, T.FLOAT64: np.float64, T.INT32: np.int32, T.FLOAT32: np.float32}
    return [trt_mod.PluginField(f.name, np.array([node[f.name]], dtype=as_numpy[f.type]), f.type) for f in creator.field_names]


@pytest.mark.parametrize("request_name, kind", [("STRICT_AOT", "_TemplateAOTPlugin"), ("STRICT_JIT", "_TemplateJITPlugin")])
def test_each_exported_node_creates_a_plugin_with_its_attributes(trt, plugin_nodes, request_name, kind):
    trt_mod, _ = trt
    creator = trt_mod.registry.get_creator(OP_TYPE, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    windows = []
    for node in plugin_nodes:
        request = getattr(trt_mod.QuickPluginCreationRequest, request_name)
        made = creator.create_plugin(OP_TYPE, PLUGIN_NAMESPACE, _fields_from(trt_mod, creator, node), None, request)
        assert type(made).__name__ == kind
        assert made.attrs["num_heads"] == node["num_heads"] and made.attrs["head_size"] == node["head_size"]
        assert made.attrs["scale"] == pytest.approx(node["scale"]) and isinstance(made.attrs["scale"], float)
        windows.append(made.attrs["window"])
        # the output takes qkv's type, whatever the builder picks (TensorRT runs the description function)
        D = trt_mod.DataType
        for dtype in (D.FLOAT, D.HALF, D.BF16):
            assert made.get_output_data_types([dtype, D.INT32, D.INT32], [2, 1, 1]) == [dtype]
    assert windows == [-1, 3, -1, 3]  # global and local layers keep their own window


def test_tensorrt_reads_the_autotune_combinations_as_output_type_equals_qkv_type(trt):
    trt_mod, trtp = trt
    (combination,) = _registered(trtp).autotune_func(None, None, None, None)
    D = trt_mod.DataType
    got = {tuple(c.types) for c in combination._get_combinations()}
    assert got == {(t, D.INT32, D.INT32, t) for t in (D.FLOAT, D.HALF, D.BF16)}
