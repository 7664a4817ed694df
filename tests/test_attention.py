"""Packed equals padded equals per-sequence, for every attention backend usable here,
with global and windowed layers; and the backend table picks and refuses correctly."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_sequences

from nanonet.model import BACKENDS, EncoderConfig, NanoEncoder, alternating, pack_sequences, pick_backend
from nanonet.model.attention import describe_backends

LENGTHS = [1, 13, 40, 7, 29]
WINDOWS = [-1, 0, 3, 16]  # global, self only, narrow, wider than some sequences


def usable_backends(device: torch.device, dtype: torch.dtype, head_size: int = 16) -> list[str]:
    return [name for name, why in describe_backends(device, dtype, head_size) if why is None]


def padded_attention(q, k, v, lengths, window, scale):
    """Independent padded reference: a (B, nh, L, L) score tensor masked to -inf."""
    B, L = len(lengths), max(lengths)
    nh, hs = q.shape[1:]
    qp, kp, vp = (torch.zeros(B, L, nh, hs, dtype=q.dtype) for _ in range(3))
    starts = [0] + list(torch.tensor(lengths).cumsum(0)[:-1].tolist())
    for b, (s, n) in enumerate(zip(starts, lengths)):
        qp[b, :n], kp[b, :n], vp[b, :n] = q[s : s + n], k[s : s + n], v[s : s + n]
    scores = torch.einsum("bind,bjnd->bnij", qp, kp) * scale
    i = torch.arange(L)
    allowed = (i[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]  # (B,1,1,L) keys
    if window >= 0:
        allowed = allowed & ((i[:, None] - i[None, :]).abs() <= window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("bnij,bjnd->bind", scores.softmax(-1).nan_to_num(), vp)
    return torch.cat([out[b, :n] for b, n in enumerate(lengths)])


def per_sequence_attention(q, k, v, lengths, window, scale):
    """Independent per-sequence reference: torch SDPA on each slice with a band mask."""
    outs, s = [], 0
    for n in lengths:
        qs, ks, vs = (t[s : s + n].transpose(0, 1) for t in (q, k, v))
        i = torch.arange(n)
        mask = None if window < 0 else (i[:, None] - i[None, :]).abs() <= window
        outs.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale).transpose(0, 1))
        s += n
    return torch.cat(outs)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("backend", usable_backends(torch.device("cpu"), torch.float32))
def test_backend_packed_equals_padded_equals_per_sequence(backend, window):
    torch.manual_seed(0)
    nh, hs = 4, 16
    batch = pack_sequences(random_sequences(LENGTHS))
    q, k, v = (torch.randn(batch.num_tokens, nh, hs) for _ in range(3))
    scale = 1 / math.sqrt(hs)
    packed = BACKENDS[backend].fn(q, k, v, batch, window, scale, 0.0)
    padded = padded_attention(q, k, v, LENGTHS, window, scale)
    per_seq = per_sequence_attention(q, k, v, LENGTHS, window, scale)
    assert packed.shape == (batch.num_tokens, nh, hs)
    torch.testing.assert_close(padded, per_seq, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, per_seq, atol=1e-5, rtol=0)


def _tiny_encoder(family: str, global_every: int, backend: str) -> NanoEncoder:
    torch.manual_seed(1)
    cfg = EncoderConfig(
        family=family,
        vocab_size=100,
        hidden_size=32,
        num_heads=4,
        intermediate_size=48,
        layer_types=alternating(4, global_every),
        local_window=6,
        max_position_embeddings=64,
        type_vocab_size=2 if family == "bert" else 0,
    )
    enc = NanoEncoder(cfg, attention=backend).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return enc


@pytest.mark.parametrize("global_every", [1, 2])  # all global; alternating global/local
@pytest.mark.parametrize("family", ["bert", "modernbert"])
@pytest.mark.parametrize("backend", usable_backends(torch.device("cpu"), torch.float32))
def test_encoder_packed_batch_equals_each_sequence_alone(family, global_every, backend):
    enc = _tiny_encoder(family, global_every, backend)
    sequences = random_sequences(LENGTHS)
    with torch.no_grad():
        together = enc(pack_sequences(sequences))
        alone = torch.cat([enc(pack_sequences([s])) for s in sequences])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", usable_backends(torch.device("cpu"), torch.float32))
def test_local_layer_ignores_tokens_outside_its_window(backend):
    """One local layer, window 6 (3 each side): changing token 20 moves tokens 17..23 only."""
    torch.manual_seed(0)
    cfg = EncoderConfig(
        family="modernbert",
        vocab_size=100,
        hidden_size=32,
        num_heads=4,
        intermediate_size=48,
        layer_types=["local"],
        local_window=6,
        type_vocab_size=0,
    )
    enc = NanoEncoder(cfg, attention=backend).eval()
    seq = random_sequences([40])[0]
    changed = list(seq)
    changed[20] = (seq[20] + 1) % 95 + 5
    with torch.no_grad():
        moved = (enc(pack_sequences([seq])) - enc(pack_sequences([changed]))).abs().amax(-1) > 1e-6
    assert moved.nonzero().flatten().tolist() == list(range(17, 24))


def test_gradients_flow_through_packed_padding_path():
    """Padded SDPA pads and unpads inside the call; no NaN may reach the gradients."""
    enc = _tiny_encoder("modernbert", 2, "sdpa").train()
    enc(pack_sequences(random_sequences(LENGTHS))).sum().backward()
    grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_backend_table_on_cpu():
    cpu = torch.device("cpu")
    assert pick_backend(cpu, torch.float32, 32).name == "sdpa"
    assert pick_backend(cpu, torch.float32, 32, "reference").name == "reference"
    with pytest.raises(ValueError, match="unavailable here: needs a CUDA device"):
        pick_backend(cpu, torch.float32, 32, "flash")
    with pytest.raises(ValueError, match="unknown attention backend"):
        pick_backend(cpu, torch.float32, 32, "magic")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("window", WINDOWS)
def test_gpu_backends_match_reference(dtype, window):
    cuda = torch.device("cuda")
    names = [n for n in usable_backends(cuda, dtype) if n in ("flash", "torch_varlen")]
    if not names:
        pytest.skip("no varlen GPU backend usable here")
    torch.manual_seed(0)
    nh, hs = 4, 64
    batch = pack_sequences(random_sequences(LENGTHS)).to(cuda)
    q, k, v = (torch.randn(batch.num_tokens, nh, hs, device=cuda, dtype=dtype) for _ in range(3))
    ref = BACKENDS["reference"].fn(q.float(), k.float(), v.float(), batch, window, hs**-0.5, 0.0)
    for name in names:
        out = BACKENDS[name].fn(q, k, v, batch, window, hs**-0.5, 0.0)
        torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=0, msg=name)
