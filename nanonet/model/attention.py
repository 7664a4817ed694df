"""Varlen self-attention over packed tokens, one function per backend, picked from a table.

Every backend takes q, k, v of shape (T, nh, hs) for a packed batch and returns
(T, nh, hs). `window` is the half-window of a local layer (a token attends to keys at
distance <= window on either side) or -1 for a global layer; every backend honours it.

| backend      | where                                   |
|--------------|-----------------------------------------|
| flash        | CUDA, flash-attn installed, fp16/bf16   |
| torch_varlen | CUDA sm80+, a torch whose varlen_attn takes scale and window_size, fp16/bf16, no attention dropout |
| sdpa         | anywhere: padded SDPA with a band mask  |
| reference    | anywhere: a per-sequence loop, for tests|
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanonet.model.packing import Packed, pad, unpad

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Packed, int, float, float], torch.Tensor]


def flash_attention(q, k, v, batch: Packed, window: int, scale: float, dropout_p: float) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(
        q,
        k,
        v,
        batch.cu_seqlens,
        batch.cu_seqlens,
        batch.max_seqlen,
        batch.max_seqlen,
        dropout_p=dropout_p,
        softmax_scale=scale,
        causal=False,
        window_size=(window, window),
    )


def torch_varlen_attention(q, k, v, batch: Packed, window: int, scale: float, dropout_p: float) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    if dropout_p > 0:  # the kernel has none; pick_backend does not choose this backend for dropout
        raise ValueError("attention backend 'torch_varlen' has no attention dropout; use flash or sdpa to train with it")
    causal = {"is_causal": False} if "is_causal" in _varlen_parameters() else {}  # torch 2.10 had the flag
    return varlen_attn(
        q,
        k,
        v,
        batch.cu_seqlens,
        batch.cu_seqlens,
        batch.max_seqlen,
        batch.max_seqlen,
        scale=scale,
        window_size=(window, window),
        **causal,
    )


@functools.cache
def _varlen_parameters() -> frozenset[str]:
    """The keyword parameters of this torch's varlen_attn (empty when it has none)."""
    import inspect

    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return frozenset()
    return frozenset(inspect.signature(varlen_attn).parameters)


def window_mask(positions: torch.Tensor | int, window: int) -> torch.Tensor:
    """(L, L) bool, True where the query at position i may attend the key at position j: on
    a local layer the keys within `window` positions either side, on a global layer
    (`window` < 0) every key. `positions`: (L,) positions, or L for 0..L-1.

    The one definition of a local layer's window for every backend and graph written in
    torch (the padded export, the TensorRT plugin's JIT path, the references)."""
    pos = torch.arange(positions) if isinstance(positions, int) else positions
    offset = pos[:, None] - pos[None, :]  # (L, L); shapes stay symbolic when exported
    if window < 0:
        return torch.ones_like(offset, dtype=torch.bool)
    return offset.abs() <= window


def _band_mask(batch: Packed, window: int) -> torch.Tensor:
    """(B, 1, L, L) bool, True where query i may attend key j; cached per batch and window."""
    key = f"band_mask:{window}"
    if key not in batch.cache:
        L, dev = batch.max_seqlen, batch.cu_seqlens.device
        pos = torch.arange(L, device=dev)
        valid = pos[None, :] < batch.lengths[:, None]  # (B, L)
        allowed = valid[:, None, :] & window_mask(pos, window)  # (B, L, L): keys that exist, in the window
        # Pad query rows see every key: a row with nothing to attend to gives NaN, which
        # would leak into gradients even though the row is dropped on unpad.
        allowed = allowed | ~valid[:, :, None]
        batch.cache[key] = allowed[:, None]
    return batch.cache[key]


def sdpa_attention(q, k, v, batch: Packed, window: int, scale: float, dropout_p: float) -> torch.Tensor:
    """Pad to (B, nh, L, hs), run SDPA with a padding + band mask, unpad."""
    qp, kp, vp = (pad(t, batch).transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hs)
    mask = None
    if window >= 0 or batch.num_tokens != batch.batch_size * batch.max_seqlen:
        mask = _band_mask(batch, window)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return unpad(out.transpose(1, 2), batch)  # (T, nh, hs)


def reference_attention(q, k, v, batch: Packed, window: int, scale: float, dropout_p: float) -> torch.Tensor:
    """One sequence at a time, softmax(q k^T * scale + band) v written out: the ground truth."""
    out = []
    bounds = batch.cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))  # (nh, l, hs)
        scores = (qs @ ks.transpose(-1, -2)).float() * scale  # (nh, l, l)
        scores = scores.masked_fill(~window_mask(torch.arange(e - s, device=q.device), window), float("-inf"))
        probs = F.dropout(scores.softmax(-1), dropout_p).to(vs.dtype)
        out.append((probs @ vs).transpose(0, 1))  # (l, nh, hs)
    return torch.cat(out)


@dataclass(frozen=True)
class Backend:
    name: str
    fn: AttentionFn
    # returns None when usable on (device, dtype, head_size, with attention dropout or not), else why not
    unavailable: Callable[[torch.device, torch.dtype, int, bool], str | None]


def _cuda_half(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cuda":
        return "needs a CUDA device"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"needs fp16/bf16, got {str(dtype).removeprefix('torch.')}"
    return None


def _flash_unavailable(device, dtype, head_size, dropout=False) -> str | None:
    if why := _cuda_half(device, dtype):
        return why
    if importlib.util.find_spec("flash_attn") is None:
        return "flash-attn is not installed (pip install 'nanonet[gpu]')"
    if head_size > 256 or head_size % 8:
        return f"head size {head_size} unsupported"
    return None


def _torch_varlen_unavailable(device, dtype, head_size, dropout=False) -> str | None:
    if why := _cuda_half(device, dtype):
        return why
    if missing := {"scale", "window_size"} - _varlen_parameters():
        return f"torch {torch.__version__}'s varlen_attn takes no {' or '.join(sorted(missing))} (needs a torch that has them)"
    if dropout:
        return "has no attention dropout (training with it needs flash or sdpa)"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "needs compute capability >= 8.0"
    return None


BACKENDS: dict[str, Backend] = {
    "flash": Backend("flash", flash_attention, _flash_unavailable),
    "torch_varlen": Backend("torch_varlen", torch_varlen_attention, _torch_varlen_unavailable),
    "sdpa": Backend("sdpa", sdpa_attention, lambda device, dtype, head_size, dropout=False: None),
    "reference": Backend("reference", reference_attention, lambda device, dtype, head_size, dropout=False: None),
}
AUTO_ORDER = ("flash", "torch_varlen", "sdpa")  # fastest first


@functools.cache
def pick_backend(device: torch.device, dtype: torch.dtype, head_size: int, requested: str = "auto", dropout: bool = False) -> Backend:
    """The backend to run on (device, dtype, with attention dropout or not): `requested` if
    usable, else the first usable one in AUTO_ORDER. On CUDA, falling back from a faster
    backend warns once."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"unknown attention backend '{requested}' (known: {', '.join(BACKENDS)})")
        backend = BACKENDS[requested]
        if why := backend.unavailable(device, dtype, head_size, dropout):
            raise ValueError(f"attention backend '{requested}' is unavailable here: {why}")
        return backend
    skipped = []
    for name in AUTO_ORDER:
        backend = BACKENDS[name]
        why = backend.unavailable(device, dtype, head_size, dropout)
        if why is None:
            if skipped and device.type == "cuda":
                warnings.warn(
                    f"nanonet attention on {device.type}/{str(dtype).removeprefix('torch.')}: using '{name}'; "
                    + "; ".join(f"'{n}' {w}" for n, w in skipped),
                    stacklevel=2,
                )
            return backend
        skipped.append((name, why))
    raise AssertionError("sdpa is always available")


def describe_backends(device: torch.device, dtype: torch.dtype, head_size: int, dropout: bool = False) -> list[tuple[str, str | None]]:
    """(name, reason it is unavailable or None) for every backend, for `nanonet info`."""
    return [(name, b.unavailable(device, dtype, head_size, dropout)) for name, b in BACKENDS.items()]
