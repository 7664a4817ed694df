"""The GPU attention backends' calls, checked on a CPU: recording stand-ins for flash-attn's
`flash_attn_varlen_func` and torch's `varlen_attn` see exactly what a real encoder passes
(offsets, longest sequence, window per layer, scale, causal off, dropout); torch's kernel is
picked by its signature and never for attention dropout; one training step runs under
bf16 autocast."""

from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import random_sequences

from nanonet.model import BACKENDS, EncoderConfig, NanoEncoder, alternating, pack_sequences, pick_backend
from nanonet.model import attention as attention_module
from nanonet.model.attention import Backend

LENGTHS = [5, 23, 1, 12]
LOCAL_WINDOW = 6  # a local layer attends 3 tokens either side


def _encoder(backend: str, layers: int = 4, dropout: float = 0.1) -> NanoEncoder:
    cfg = EncoderConfig(
        family="bert",
        vocab_size=100,
        hidden_size=64,
        num_heads=4,
        intermediate_size=128,
        layer_types=alternating(layers, 2),
        local_window=LOCAL_WINDOW,
        max_position_embeddings=64,
        attention_dropout=dropout,
        hidden_dropout=dropout,
    )
    torch.manual_seed(0)
    return NanoEncoder(cfg, attention=backend)


@pytest.fixture
def usable_here(monkeypatch):
    """Make a named backend usable on this CPU (its availability check only), for one test."""

    def make(name: str):
        real = BACKENDS[name]
        monkeypatch.setitem(BACKENDS, name, Backend(name, real.fn, lambda device, dtype, head_size, dropout=False: None))

    pick_backend.cache_clear()
    yield make
    pick_backend.cache_clear()


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, *args, **kwargs):
        self.calls.append((q, args, kwargs))
        return torch.zeros_like(q)


@pytest.mark.parametrize("training", [False, True])
def test_flash_gets_int32_offsets_on_the_device_the_window_per_layer_and_no_causal_mask(usable_here, monkeypatch, training):
    record = Recorder()
    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=record))
    usable_here("flash")
    enc = _encoder("flash").train(training)
    batch = pack_sequences(random_sequences(LENGTHS))
    enc(batch)
    assert len(record.calls) == 4
    cu_expected = torch.tensor([0, 5, 28, 29, 41], dtype=torch.int32)
    for layer, (q, (cu_q, cu_k, max_q, max_k), kw) in enumerate(record.calls):
        assert cu_q.dtype == cu_k.dtype == torch.int32 and cu_q.device == q.device
        assert torch.equal(cu_q, cu_expected) and torch.equal(cu_k, cu_expected)
        assert (max_q, max_k) == (23, 23) and type(max_q) is int
        half = -1 if layer % 2 == 0 else LOCAL_WINDOW // 2  # global, local, global, local
        assert kw["window_size"] == (half, half)
        assert kw["causal"] is False
        assert kw["softmax_scale"] == pytest.approx(16**-0.5)
        assert kw["dropout_p"] == (0.1 if training else 0.0)


def _varlen_with(keywords: str):
    """A recording varlen_attn whose keyword-only parameters are `keywords` (one torch version's signature)."""
    record = Recorder()

    def varlen_attn(*args, **kwargs):
        return record(*args, **kwargs)

    P = inspect.Parameter
    positional = [P(n, P.POSITIONAL_OR_KEYWORD) for n in ("query", "key", "value", "cu_seq_q", "cu_seq_k", "max_q", "max_k")]
    varlen_attn.__signature__ = inspect.Signature(positional + [P(n, P.KEYWORD_ONLY, default=None) for n in keywords.split()])
    return varlen_attn, record


@pytest.fixture
def varlen(monkeypatch):
    import torch.nn.attention.varlen as varlen_module

    def install(params: str):
        fn, record = _varlen_with(params)
        monkeypatch.setattr(varlen_module, "varlen_attn", fn)
        attention_module._varlen_parameters.cache_clear()
        return record

    yield install
    attention_module._varlen_parameters.cache_clear()


def test_torch_varlen_gets_the_scale_and_window_and_is_causal_only_where_torch_has_it(usable_here, varlen):
    usable_here("torch_varlen")
    for params, causal in (("return_aux scale window_size", False), ("is_causal scale window_size", True)):
        record = varlen(params)
        enc = _encoder("torch_varlen", dropout=0.0).eval()
        batch = pack_sequences(random_sequences(LENGTHS))
        enc(batch)
        assert len(record.calls) == 4
        for layer, (q, (cu_q, cu_k, max_q, max_k), kw) in enumerate(record.calls):
            assert cu_q.dtype == torch.int32 and cu_q.device == q.device and torch.equal(cu_q, cu_k) and (max_q, max_k) == (23, 23)
            half = -1 if layer % 2 == 0 else LOCAL_WINDOW // 2
            assert kw["window_size"] == (half, half) and kw["scale"] == pytest.approx(16**-0.5)
            assert ("is_causal" in kw) == causal and kw.get("is_causal", False) is False


def test_torch_varlen_is_picked_by_its_signature_and_never_for_dropout(varlen):
    cuda = torch.device("cuda")  # only the checks before any CUDA call run here
    varlen("return_aux scale")
    why = attention_module._torch_varlen_unavailable(cuda, torch.bfloat16, 16)
    assert why is not None and "varlen_attn takes no window_size" in why
    varlen("is_causal return_aux")
    assert "takes no scale or window_size" in attention_module._torch_varlen_unavailable(cuda, torch.bfloat16, 16)
    varlen("return_aux scale window_size")
    assert (
        attention_module._torch_varlen_unavailable(cuda, torch.bfloat16, 16, dropout=True)
        == "has no attention dropout (training with it needs flash or sdpa)"
    )


def test_torch_varlen_refuses_attention_dropout_rather_than_skipping_it(usable_here, varlen):
    usable_here("torch_varlen")
    varlen("return_aux scale window_size")
    enc = _encoder("torch_varlen", dropout=0.1).train()
    with pytest.raises(ValueError, match="has no attention dropout"):
        enc(pack_sequences(random_sequences(LENGTHS)))


def test_auto_training_with_attention_dropout_skips_torch_varlen(monkeypatch):
    """With flash-attn missing, auto on a GPU used to take torch_varlen and drop the dropout."""
    pick_backend.cache_clear()
    for name in ("flash", "torch_varlen", "sdpa"):
        real = BACKENDS[name]
        unavailable = (
            real.unavailable
            if name != "torch_varlen"
            else (lambda device, dtype, head_size, dropout=False: "has no attention dropout" if dropout else None)
        )
        if name == "flash":
            unavailable = lambda device, dtype, head_size, dropout=False: "flash-attn is not installed"  # noqa: E731
        monkeypatch.setitem(BACKENDS, name, Backend(name, real.fn, unavailable))
    try:
        cpu = torch.device("cpu")
        assert pick_backend(cpu, torch.float32, 16, dropout=False).name == "torch_varlen"
        assert pick_backend(cpu, torch.float32, 16, dropout=True).name == "sdpa"
    finally:
        pick_backend.cache_clear()


def test_one_training_step_under_bf16_autocast():
    """The step a GPU run takes (bf16 autocast), on the CPU's autocast: finite, it moves the
    bias terms, and its logits stay within bf16's precision of the fp32 ones."""
    from nanonet.model.encoder import NanoClassifier
    from nanonet.train.peft import set_trainable

    enc = _encoder("sdpa", dropout=0.0)
    model = NanoClassifier(enc, 3, "mean", dropout=0.0).train()  # no dropout: the bf16 and fp32 logits compare
    set_trainable(model, "bias")
    batch = pack_sequences(random_sequences(LENGTHS))
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        fp32 = model.eval()(batch)
    model.train()
    biases = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)
        loss = F.cross_entropy(logits.float(), labels)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    opt.step()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, biases[n])]
    assert len(moved) > len(biases) // 2
    assert (logits.float() - fp32).abs().max() <= 0.05 * max(1.0, fp32.abs().max().item())


def test_the_attention_dropout_override_reaches_every_layer_and_the_students():
    from nanonet.model.checkpoint import make_student
    from nanonet.model.encoder import SelfAttention

    enc = _encoder("sdpa", dropout=0.1)
    enc.set_attention_dropout(0.0)
    student = make_student(enc, [0, 2])
    layers = [m for model in (enc, student) for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(layers) == 6 and all(m.dropout == 0.0 for m in layers)
    assert student.config.attention_dropout == 0.0
