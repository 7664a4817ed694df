"""The Triton varlen attention kernel against the per-sequence reference: global and
windowed layers, mixed lengths, every supported head size. On a CUDA GPU in fp16/bf16
(marked gpu); everywhere else through Triton's interpreter in fp32, in a child process
(conftest.run_interpreted), so that this process's TRITON_INTERPRET and kernels stay as
they are."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_interpreted

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
pytest.importorskip("triton")

from nanonet.export.tensorrt.varlen_op import reference  # noqa: E402

CPU_CASES = [(head_size, window) for head_size in (16, 32) for window in (-1, 4)]


def _case(lengths: list[int], heads: int, head_size: int, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    qkv = torch.randn(T, 3 * heads * head_size, generator=g).to(dtype).to(device)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return qkv, cu.to(device)


def _diff(lengths, heads, head_size, window, dtype, device, block=16) -> float:
    """Max |kernel - reference| on one case."""
    from nanonet.export.tensorrt.triton_varlen import varlen_attention

    qkv, cu = _case(lengths, heads, head_size, dtype, device, seed=len(lengths) + head_size + window)
    scale = head_size**-0.5
    got = varlen_attention(qkv, cu, max(lengths), heads, head_size, scale, window, block_m=block, block_n=block)
    ref = reference(qkv.float().cpu().numpy(), cu.cpu().numpy(), heads, head_size, scale, window)
    return float(np.abs(got.float().cpu().numpy() - ref).max())


def _wide_window_gap() -> float:
    """Max |window 50 - global| on sequences of 9 and 3 tokens."""
    from nanonet.export.tensorrt.triton_varlen import varlen_attention

    qkv, cu = _case([9, 3], 1, 16, torch.float32, "cpu")
    a = varlen_attention(qkv, cu, 9, 1, 16, 0.25, window=50, block_m=16, block_n=16)
    b = varlen_attention(qkv, cu, 9, 1, 16, 0.25, window=-1, block_m=16, block_n=16)
    return float((a - b).abs().max())


_INTERPRETED = r"""
import json, torch
import test_triton_varlen as t
from nanonet.export.tensorrt import triton_varlen
out = {"kernel": type(triton_varlen._varlen_attention_fwd).__name__, "wide_window_gap": t._wide_window_gap()}
# lengths around the block size (16) and windows far shorter than the sequences
out.update({f"{hs},{w}": t._diff([1, 17, 5, 40], 2, hs, w, torch.float32, "cpu") for hs, w in t.CPU_CASES})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def interpreted() -> dict:
    """Every CPU case, run once in Triton's interpreter in a child process."""
    return run_interpreted(_INTERPRETED)


@pytest.mark.skipif(CUDA, reason="the GPU tests below cover this machine")
def test_the_child_ran_the_kernel_interpreted(interpreted):
    assert interpreted["kernel"] == "InterpretedFunction"


@pytest.mark.skipif(CUDA, reason="the GPU tests below cover this machine")
@pytest.mark.parametrize("head_size, window", CPU_CASES)
def test_interpreter_matches_reference(interpreted, head_size, window):
    assert interpreted[f"{head_size},{window}"] <= 1e-5


@pytest.mark.skipif(CUDA, reason="the GPU tests below cover this machine")
def test_interpreter_window_wider_than_the_sequence_is_global(interpreted):
    assert interpreted["wide_window_gap"] <= 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("head_size", [32, 64, 128])
@pytest.mark.parametrize("window", [-1, 64])
def test_gpu_matches_reference(dtype, head_size, window):
    tol = 2e-2 if dtype == "bfloat16" else 5e-3
    diff = _diff([1, 300, 77, 513, 128], heads=4, head_size=head_size, window=window, dtype=getattr(torch, dtype), device="cuda", block=64)
    assert diff <= tol, (head_size, window, dtype, diff)
