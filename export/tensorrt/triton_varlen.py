"""Varlen attention as a Triton kernel: the compute of the VarlenAttention plugin.

Packed input, the plugin's layout: qkv [T, 3*H] (q, k, v of every head side by side for
each token), cu_seqlens [B+1] int32. Output [T, H]. One program per (block of BLOCK_M
queries, sequence, head); it streams key/value blocks of its own sequence only (for a
local layer, only those within `window` of its queries) with an online softmax, so no
padding and no [L, L] score matrix exist anywhere. fp16 / bf16 (fp32 for tests), head
sizes 16..128 (powers of two).

On a machine without a GPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1),
which is how the tests check it against the per-sequence reference everywhere.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

HEAD_SIZES = (16, 32, 64, 128)


@triton.jit
def _attend(
    QKV,
    CU,
    OUT,
    scale,
    window,
    stride_tok,
    stride_out,
    HIDDEN: tl.constexpr,
    HEAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr,
    IEEE: tl.constexpr,
):
    """The work of one program: BLOCK_M queries of one sequence and one head."""
    pid_m, b, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + b)
    L = tl.load(CU + b + 1) - start
    m0 = pid_m * BLOCK_M
    if m0 < L:
        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD)
        row = (start + offs_m)[:, None]
        q = tl.load(QKV + row * stride_tok + h * HEAD + offs_d[None, :], mask=(offs_m < L)[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD], tl.float32)
        lo = 0
        hi = L
        if WINDOWED:  # only the key blocks a local layer's queries can see
            lo = tl.maximum(m0 - window, 0)
            hi = tl.minimum(m0 + BLOCK_M + window, L)
        lo = (lo // BLOCK_N) * BLOCK_N
        for n0 in range(lo, hi, BLOCK_N):
            n = n0 + offs_n
            key_row = (start + n)[:, None]
            k = tl.load(QKV + key_row * stride_tok + HIDDEN + h * HEAD + offs_d[None, :], mask=(n < L)[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
            else:
                s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_M, BLOCK_N) float32
            valid = (n < L)[None, :]
            if WINDOWED:
                dist = offs_m[:, None] - n[None, :]
                valid = valid & (dist <= window) & (dist >= -window)
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(QKV + key_row * stride_tok + 2 * HIDDEN + h * HEAD + offs_d[None, :], mask=(n < L)[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # real queries see at least themselves; rows past L are not stored
        tl.store(OUT + row * stride_out + h * HEAD + offs_d[None, :], acc.to(OUT.dtype.element_ty), mask=(offs_m < L)[:, None])


@triton.jit
def _varlen_attention_fwd(
    QKV,
    CU,
    OUT,
    scale,
    window,
    stride_tok,
    stride_out,
    HIDDEN: tl.constexpr,
    HEAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr,
    IEEE: tl.constexpr,
):
    """Launched from Python (torch tensors, the JIT plugin): scale, window and strides are arguments."""
    _attend(QKV, CU, OUT, scale, window, stride_tok, stride_out, HIDDEN, HEAD, BLOCK_M, BLOCK_N, WINDOWED, IEEE)


@triton.jit
def varlen_attention_aot(
    QKV,
    CU,
    MAX_SEQLEN,
    OUT,
    SCALE: tl.constexpr,
    WINDOW: tl.constexpr,
    HIDDEN: tl.constexpr,
    HEAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WINDOWED: tl.constexpr,
    IEEE: tl.constexpr,
):
    """Launched by TensorRT from an engine (the AOT plugin): its pointers come in the plugin's
    order, inputs (qkv, cu_seqlens, max_seqlen) then the output, with no scalar arguments,
    because an AOT plugin's attributes are not stored in the engine: scale and window are
    compiled in, and the buffers are contiguous ([T, 3H] in, [T, H] out). MAX_SEQLEN is read
    only through its shape, in the launch grid."""
    _attend(QKV, CU, OUT, SCALE, WINDOW, 3 * HIDDEN, HIDDEN, HIDDEN, HEAD, BLOCK_M, BLOCK_N, WINDOWED, IEEE)


def varlen_attention(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    num_heads: int,
    head_size: int,
    scale: float,
    window: int = -1,
    block_m: int = 64,
    block_n: int = 64,
) -> torch.Tensor:
    """qkv [T, 3*H] (fp16/bf16/fp32), cu_seqlens [B+1] int32 -> [T, H]. window: half-window, -1 = global."""
    if head_size not in HEAD_SIZES:
        raise ValueError(f"head size {head_size} not supported (supported: {HEAD_SIZES})")
    T, width = qkv.shape
    hidden = num_heads * head_size
    if width != 3 * hidden:
        raise ValueError(f"qkv has {width} columns, expected 3 * {num_heads} * {head_size}")
    qkv = qkv.contiguous()
    out = torch.empty(T, hidden, dtype=qkv.dtype, device=qkv.device)
    batch = cu_seqlens.numel() - 1
    grid = (triton.cdiv(max_seqlen, block_m), batch, num_heads)
    _varlen_attention_fwd[grid](
        qkv,
        cu_seqlens,
        out,
        scale,
        window,
        qkv.stride(0),
        out.stride(0),
        HIDDEN=hidden,
        HEAD=head_size,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        WINDOWED=window >= 0,
        IEEE=qkv.dtype == torch.float32,
    )
    return out
