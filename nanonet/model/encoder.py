"""The packed NanoNet encoder: BERT-family and ModernBERT-family blocks on (T, hidden) tokens.

Reads top to bottom: embeddings, attention, the two block families, the encoder, then
pooling and the classifier. Every layer works on packed tokens (see packing.py); the
only padding is inside an attention backend that needs it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanonet.model.attention import pick_backend
from nanonet.model.config import EncoderConfig
from nanonet.model.packing import Packed

ACTIVATION = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class Embeddings(nn.Module):
    """BERT: word + absolute position + token type, LayerNorm. ModernBERT: word, LayerNorm."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size) if cfg.family == "bert" else None
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, batch: Packed) -> torch.Tensor:
        x = self.word(batch.input_ids)  # (T, H)
        if self.position is not None:
            x = x + self.position(batch.position_ids)
        if self.token_type is not None:
            types = batch.token_type_ids
            x = x + (self.token_type(types) if types is not None else self.token_type.weight[0])
        return self.drop(self.norm(x))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(batch: Packed, head_size: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (T, 1, hs) for each token's position in its sequence; cached per batch."""
    key = f"rope:{head_size}:{theta}:{dtype}"
    if key not in batch.cache:
        dev = batch.position_ids.device
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, device=dev, dtype=torch.float32) / head_size))
        freqs = batch.position_ids[..., None].float() * inv_freq  # (T, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(-2)  # (T, 1, hs)
        batch.cache[key] = (emb.cos().to(dtype), emb.sin().to(dtype))
    return batch.cache[key]


class SelfAttention(nn.Module):
    """Fused QKV projection, optional RoPE, a varlen attention backend, output projection."""

    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.num_heads, self.head_size = cfg.num_heads, cfg.head_size
        self.window = cfg.window(layer)
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = cfg.attention_dropout
        self.rope_theta = None
        if cfg.family == "modernbert":
            self.rope_theta = cfg.rope_theta_global if self.window < 0 else cfg.rope_theta_local

    def forward(self, x: torch.Tensor, batch: Packed, backend: str) -> torch.Tensor:
        # x is (T, H) packed; export's padded batch feeds (B, L, H) through the same code
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_size))  # (T, 3, nh, hs)
        q, k, v = qkv.unbind(-3)  # each (T, nh, hs)
        if self.rope_theta is not None:
            cos, sin = rope_tables(batch, self.head_size, self.rope_theta, torch.float32)
            q = (q.float() * cos + rotate_half(q.float()) * sin).to(v.dtype)
            k = (k.float() * cos + rotate_half(k.float()) * sin).to(v.dtype)
        # a batch that brings its own attention (export's padded batch) uses it
        dropout = self.dropout if self.training else 0.0
        attend = getattr(batch, "attend", None) or pick_backend(q.device, q.dtype, self.head_size, backend, dropout > 0).fn
        y = attend(q, k, v, batch, self.window, self.head_size**-0.5, dropout)  # (T, nh, hs)
        return self.out(y.flatten(-2))


class BertBlock(nn.Module):
    """Post-LayerNorm: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.attn = SelfAttention(cfg, layer)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.act = ACTIVATION[cfg.activation]
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, batch: Packed, backend: str) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, batch, backend)))
        return self.mlp_norm(x + self.drop(self.fc2(self.act(self.fc1(x)))))


class ModernBertBlock(nn.Module):
    """Pre-LayerNorm with GeGLU: x = x + attn(LN(x)); x = x + Wo(act(a) * g), [a, g] = Wi(LN(x)).

    The original checkpoint's layer 0 has no attention norm (its input is the already
    normalised embedding); a block made from it keeps that identity.
    """

    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.attn_norm = nn.Identity() if cfg.layer_ids[layer] == 0 else nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg, layer)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACTIVATION[cfg.activation]
        self.drop = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, batch: Packed, backend: str) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), batch, backend)
        a, g = self.fc1(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.fc2(self.drop(self.act(a) * g))


BLOCKS = {"bert": BertBlock, "modernbert": ModernBertBlock}


class NanoEncoder(nn.Module):
    """Packed encoder: `forward(batch) -> (T, hidden)` last hidden states of every real token.

    `attention` picks the backend: "auto" (fastest usable, see attention.py) or a name.
    """

    def __init__(self, cfg: EncoderConfig, attention: str = "auto"):
        super().__init__()
        self.config = cfg
        self.attention = attention
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(BLOCKS[cfg.family](cfg, i) for i in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps) if cfg.family == "modernbert" else nn.Identity()

    def set_attention_dropout(self, p: float) -> None:
        """Attention dropout of every layer (and of the config, which a student copies)."""
        self.config.attention_dropout = p
        for module in self.modules():
            if isinstance(module, SelfAttention):
                module.dropout = p

    def forward(self, batch: Packed, noise_std: float = 0.0) -> torch.Tensor:
        """`noise_std` adds Gaussian noise to the embeddings (a data view for training)."""
        x = self.embeddings(batch)  # (T, H)
        if noise_std > 0:
            x = x + noise_std * torch.randn_like(x)
        return self.final_norm(self.run_layers(x, batch))

    def run_layers(self, x: torch.Tensor, batch: Packed, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Layers `start` to `stop` (exclusive) on hidden states `x` (T, H), no final norm:
        a caller holding the states after some layers goes on from there."""
        for layer in self.layers[start:stop]:
            x = layer(x, batch, self.attention)
        return x


def pool(x: torch.Tensor, batch: Packed, how: str) -> torch.Tensor:
    """(T, H) -> (B, H): the first token of each sequence ("cls") or the mean of its tokens."""
    if how == "cls":
        return x[batch.cu_seqlens[:-1].long()]
    if how == "mean":
        sums = x.new_zeros(batch.batch_size, x.shape[1]).index_add_(0, batch.seq_index, x)
        return sums / batch.lengths[:, None].to(x.dtype)
    raise ValueError(f"unknown pooling '{how}' (known: cls, mean)")


class NanoClassifier(nn.Module):
    """Packed encoder, per-sequence pooling and a linear head: `forward(batch) -> (B, C)` logits."""

    def __init__(self, encoder: EncoderConfig | NanoEncoder, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
        """`encoder`: a config (a new encoder is built) or an encoder to use as it is."""
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"unknown pooling '{pooling}' (known: cls, mean)")
        self.pooling = pooling
        self.encoder = encoder if isinstance(encoder, NanoEncoder) else NanoEncoder(encoder)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_labels)

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.config

    def embed(self, batch: Packed, noise_std: float = 0.0) -> torch.Tensor:  # (B, H)
        return pool(self.encoder(batch, noise_std), batch, self.pooling)

    def forward(self, batch: Packed, noise_std: float = 0.0, return_embedding: bool = False):
        """(B, C) logits; with `return_embedding`, also the pooled (B, H) embedding."""
        embedding = self.embed(batch, noise_std)
        logits = self.head(self.drop(embedding))
        return (logits, embedding) if return_embedding else logits
