"""The Triton varlen attention kernel against the per-sequence reference: global and
windowed layers, mixed lengths, every supported head size. On a CUDA GPU in fp16/bf16
(marked gpu); everywhere else through Triton's interpreter in fp32."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernel module is imported: run kernels on the CPU
pytest.importorskip("triton")

from export.tensorrt.triton_varlen import varlen_attention  # noqa: E402
from export.tensorrt.varlen_op import reference  # noqa: E402


def _case(lengths: list[int], heads: int, head_size: int, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    qkv = torch.randn(T, 3 * heads * head_size, generator=g).to(dtype).to(device)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return qkv, cu.to(device)


def _check(lengths, heads, head_size, window, dtype, device, tol, block=16):
    qkv, cu = _case(lengths, heads, head_size, dtype, device, seed=len(lengths) + head_size + window)
    scale = head_size**-0.5
    got = varlen_attention(qkv, cu, max(lengths), heads, head_size, scale, window, block_m=block, block_n=block)
    ref = reference(qkv.float().cpu().numpy(), cu.cpu().numpy(), heads, head_size, scale, window)
    diff = float(np.abs(got.float().cpu().numpy() - ref).max())
    assert diff <= tol, (lengths, heads, head_size, window, diff)


@pytest.mark.skipif(CUDA, reason="the GPU tests below cover this machine")
@pytest.mark.parametrize("window", [-1, 4])
@pytest.mark.parametrize("head_size", [16, 32])
def test_interpreter_matches_reference(head_size, window):
    # lengths around the block size (16) and windows far shorter than the sequences
    _check([1, 17, 5, 40], heads=2, head_size=head_size, window=window, dtype=torch.float32, device="cpu", tol=1e-5)


@pytest.mark.skipif(CUDA, reason="the GPU tests below cover this machine")
def test_interpreter_window_wider_than_the_sequence_is_global():
    qkv, cu = _case([9, 3], 1, 16, torch.float32, "cpu")
    a = varlen_attention(qkv, cu, 9, 1, 16, 0.25, window=50, block_m=16, block_n=16)
    b = varlen_attention(qkv, cu, 9, 1, 16, 0.25, window=-1, block_m=16, block_n=16)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("head_size", [32, 64, 128])
@pytest.mark.parametrize("window", [-1, 64])
def test_gpu_matches_reference(dtype, head_size, window):
    tol = 2e-2 if dtype == "bfloat16" else 5e-3
    _check([1, 300, 77, 513, 128], heads=4, head_size=head_size, window=window, dtype=getattr(torch, dtype), device="cuda",
           tol=tol, block=64)  # fmt: skip
