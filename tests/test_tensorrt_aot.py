"""The ahead-of-time VarlenAttention plugin without TensorRT or a GPU.

- numerics: the AOT kernel, launched as TensorRT launches it (the plugin's buffers in
  order, no scalar arguments, the plugin's grid), against the per-sequence reference, in
  Triton's interpreter;
- the PTX an engine would carry: compiled for Ampere, Jetson Orin and Hopper, with only
  the plugin's four pointer parameters, no scratch memory, shared memory within a plain
  launch, and accepted by ptxas for its target;
- the engine builder's switch between the AOT and JIT implementations, and the CLI's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_interpreted

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
CUDA = torch.cuda.is_available()
pytest.importorskip("triton")

# aot.py imports Triton only inside its compile function; the kernel runs in Triton's
# interpreter in a child process (conftest.run_interpreted), this process keeps its environment
from nanonet.export.tensorrt.aot import AotKernel, check_launchable, drop_unused_params, entry_params, launch_grid  # noqa: E402
from nanonet.export.tensorrt.varlen_op import reference  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AOT_WINDOWS = [-1, 3]


def _launch_as_tensorrt_does(window: int) -> dict:
    """The AOT kernel launched as TensorRT launches it (the plugin's buffers in order, no
    scalar arguments, the plugin's grid): its grid, whether every output row was written,
    and the max difference from the reference."""
    from nanonet.export.tensorrt.triton_varlen import varlen_attention_aot

    heads, head_size, lengths, block = 2, 16, [1, 19, 6, 33], 16
    g = torch.Generator().manual_seed(7 + window)
    T = sum(lengths)
    qkv = torch.randn(T, 3 * heads * head_size, generator=g)
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    max_seqlen = torch.zeros(max(lengths), dtype=torch.int32)  # a shape carrier, as in the engine
    out = torch.full((T, heads * head_size), float("nan"))
    scale = head_size**-0.5
    grid = launch_grid(max_seqlen.shape[0], cu.shape[0] - 1, heads, block)
    varlen_attention_aot[grid](
        qkv,
        cu,
        max_seqlen,
        out,
        SCALE=scale,
        WINDOW=window,
        HIDDEN=heads * head_size,
        HEAD=head_size,
        BLOCK_M=block,
        BLOCK_N=block,
        WINDOWED=window >= 0,
        IEEE=True,
    )
    ref = reference(qkv.numpy(), cu.numpy(), heads, head_size, scale, window)
    return {
        "grid": list(grid),
        "kernel": type(varlen_attention_aot).__name__,
        "unwritten": bool(torch.isnan(out).any()),
        "max_diff": float(np.abs(out.numpy() - ref).max()),
    }


_INTERPRETED = r"""
import json
import test_tensorrt_aot as t
print(json.dumps({str(w): t._launch_as_tensorrt_does(w) for w in t.AOT_WINDOWS}))
"""


@pytest.fixture(scope="module")
def interpreted() -> dict:
    return run_interpreted(_INTERPRETED)


@pytest.mark.skipif(CUDA, reason="runs in Triton's interpreter")
@pytest.mark.parametrize("window", AOT_WINDOWS)
def test_aot_kernel_launched_as_tensorrt_does_matches_reference(interpreted, window):
    run = interpreted[str(window)]
    assert run["kernel"] == "InterpretedFunction" and run["grid"] == [3, 4, 2]
    assert not run["unwritten"]  # every output row written
    assert run["max_diff"] <= 1e-5


_COMPILE = r"""
import json, os, subprocess, sys, tempfile
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from nanonet.export.tensorrt.aot import compile_varlen_attention, entry_params
rows = []
for arch, dtype, head_size, window, ptx_version in json.loads(sys.argv[1]):
    k = compile_varlen_attention(dtype, 384 // head_size, head_size, head_size ** -0.5, window, target=GPUTarget("cuda", arch, 32),
                                 ptx_version=ptx_version)
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "k.ptx"), "w").write(k.ptx)
        r = subprocess.run([get_ptxas(arch).path, f"-arch={k.target}", os.path.join(d, "k.ptx"), "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    rows.append({**k.summary(), "params": entry_params(k.ptx, k.name), "ptxas": r.returncode, "ptxas_err": r.stderr[-300:]})
print(json.dumps(rows))
"""

# (sm, dtype, head size, window, highest PTX ISA): Ampere, Jetson Orin (sm_87) and Hopper,
# every dtype and head size once, global and local layers, a PTX ISA capped for an older
# driver, and float32 with heads of 128, which only fits smaller tiles
CASES = [
    (80, "float16", 64, -1, None),
    (87, "float16", 32, 64, 80),
    (87, "bfloat16", 128, -1, None),
    (90, "bfloat16", 64, 64, None),
    (90, "float16", 128, 64, 85),
    (87, "float32", 128, -1, None),
]


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a real compile, in a process of its own
    r = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(CASES)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "ptxas" in r.stderr and "not found" in r.stderr.lower():
        pytest.skip("this Triton build has no CUDA compiler")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_aot_ptx_is_what_tensorrt_launches(compiled):
    for case, k in zip(CASES, compiled):
        arch, _, _, _, ptx_version = case
        assert k["params"] == ["u64"] * 4, (case, k)  # qkv, cu_seqlens, max_seqlen, output: Triton's scratch pointers removed
        assert k["target"].startswith(f"sm_{arch}") and k["shared_mem"] <= 48 * 1024, (case, k)
        assert k["ptxas"] == 0, (case, k["ptxas_err"])  # the PTX assembles for its target
        if ptx_version is not None:
            assert k["ptx_isa"] == f"{ptx_version // 10}.{ptx_version % 10}"


def test_scratch_parameters_are_only_dropped_when_unused():
    entry = ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1,\n\t.param .u64 k_param_2\n)\n{\n"
    unused = entry + "\tld.param.b64 %rd1, [k_param_0];\n}\n"
    assert entry_params(drop_unused_params(unused, "k", keep=1), "k") == ["u64"]
    used = entry + "\tld.param.b64 %rd1, [k_param_2];\n}\n"
    assert drop_unused_params(used, "k", keep=1) == used  # kept, so the launch check refuses it
    taken = entry + "\tmov.b64 %rd1, k_param_1;\n}\n"  # a use by name, not through a load
    assert drop_unused_params(taken, "k", keep=1) == taken
    with pytest.raises(ValueError, match="4 pointer parameters"):
        check_launchable(AotKernel("k", used, 4, 0, 64, "sm_80", "8.0"))


def test_a_kernel_over_the_plain_launch_shared_memory_is_refused():
    ptx = ".visible .entry k(\n" + ",\n".join(f"\t.param .u64 k_param_{i}" for i in range(4)) + "\n)\n{\n}\n"
    check_launchable(AotKernel("k", ptx, 4, 48 * 1024, 64, "sm_80", "8.0"))
    with pytest.raises(ValueError, match="shared memory"):
        check_launchable(AotKernel("k", ptx, 4, 48 * 1024 + 1, 64, "sm_80", "8.0"))


def test_the_builder_sets_the_plugin_choice_on_every_attention_node(tmp_path):
    pytest.importorskip("onnxscript")
    from nanonet.export.tensorrt.engine import network_graph
    from nanonet.export.tensorrt.varlen_op import OP_TYPE, TRT_DOMAIN, register_schema

    register_schema()
    node = onnx.helper.make_node(
        OP_TYPE,
        ["qkv", "cu", "ms"],
        ["y"],
        domain=TRT_DOMAIN,
        num_heads=2,
        head_size=16,
        scale=0.25,
        window=-1,
        plugin_namespace="nanonet",
        plugin_version="1",
        aot=1,
    )
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [
            onnx.helper.make_tensor_value_info("qkv", onnx.TensorProto.FLOAT, ["T", 96]),
            onnx.helper.make_tensor_value_info("cu", onnx.TensorProto.INT32, ["B1"]),
            onnx.helper.make_tensor_value_info("ms", onnx.TensorProto.INT32, ["S"]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["T", 32])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18), onnx.helper.make_opsetid(TRT_DOMAIN, 1)]), str(path)
    )
    for choice, flag in (("aot", 1), ("jit", 0)):
        m = onnx.load_from_string(network_graph(path, choice, "fp32"))
        onnx.checker.check_model(m)
        attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in m.graph.node]
        assert [a["aot"] for a in attrs] == [flag] and attrs[0]["window"] == -1


def test_cli_refuses_an_unknown_plugin_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "nanonet", "engine", str(tmp_path), "--plugin", "cuda"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode != 0 and "--plugin: must be one of aot, jit, got 'cuda'" in r.stderr and "Traceback" not in r.stderr


def test_an_aot_build_refuses_heads_without_a_kernel(tmp_path):
    from nanonet.export.tensorrt.engine import AOT_HEAD_SIZES, network_graph
    from nanonet.export.tensorrt.triton_varlen import HEAD_SIZES
    from nanonet.export.tensorrt.varlen_op import OP_TYPE, TRT_DOMAIN
    from nanonet.runtimes.errors import NanonetError

    assert AOT_HEAD_SIZES == HEAD_SIZES
    node = onnx.helper.make_node(OP_TYPE, ["qkv", "cu", "ms"], ["y"], domain=TRT_DOMAIN, num_heads=4, head_size=8, scale=0.35, window=-1)
    graph = onnx.helper.make_graph([node], "g", [], [])
    path = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(NanonetError, match="heads of 8 have no AOT attention kernel.*--plugin jit"):
        network_graph(path, "aot", "fp32")
    assert network_graph(path, "jit", "fp32")
