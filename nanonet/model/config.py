"""EncoderConfig: everything needed to build a NanoEncoder, and its translation from
Hugging Face `config.json` files (BERT, DistilBERT, ModernBERT)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanonet.runtimes.errors import NanonetError

FAMILIES = ("bert", "modernbert")
GLOBAL, LOCAL = "global", "local"
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")

# Hugging Face activation names -> ours
_HF_ACT = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def alternating(num_layers: int, global_every: int) -> list[str]:
    """Layer i is global when i % global_every == 0, local otherwise (ModernBERT's rule)."""
    if global_every < 1:
        raise NanonetError(f"global_every must be >= 1, got {global_every}")
    return [GLOBAL if i % global_every == 0 else LOCAL for i in range(num_layers)]


@dataclass
class EncoderConfig:
    """Shape and behaviour of a packed encoder.

    family: "bert" (post-LayerNorm, learned absolute positions, token types, biases)
        or "modernbert" (pre-LayerNorm, RoPE, GeGLU, zero-initialised biases).
    layer_types: "global" or "local" per layer; a local layer attends to tokens at
        distance <= local_window // 2 on each side (ModernBERT's `local_attention`).
    layer_ids: which layer of the original checkpoint each layer came from, so a
        student built from layers 0,2,4 says so (and ModernBERT's layer 0 keeps its
        identity attention norm).
    max_length: longest tokenized input the model is used with (tokenizer truncation).
    """

    family: str
    vocab_size: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    layer_types: list[str]
    layer_ids: list[int] = field(default_factory=list)
    local_window: int = 128
    max_position_embeddings: int = 512
    max_length: int = 512
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    activation: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    rope_theta_global: float = 160_000.0
    rope_theta_local: float = 10_000.0
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if not self.layer_ids:
            self.layer_ids = list(range(len(self.layer_types)))
        self.validate()

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def window(self, layer: int) -> int:
        """Half-window of a layer for the attention kernels: -1 for global layers."""
        return -1 if self.layer_types[layer] == GLOBAL else self.local_window // 2

    def validate(self, source: str = "config") -> None:
        def bad(msg: str) -> NanonetError:
            return NanonetError(f"{source}: {msg}")

        if self.family not in FAMILIES:
            raise bad(f"unknown model family '{self.family}' (known: {', '.join(FAMILIES)})")
        if self.hidden_size % self.num_heads:
            raise bad(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if not self.layer_types:
            raise bad("the model has no layers")
        if any(t not in (GLOBAL, LOCAL) for t in self.layer_types):
            raise bad(f"layer_types must be '{GLOBAL}' or '{LOCAL}', got {self.layer_types}")
        if len(self.layer_ids) != len(self.layer_types):
            raise bad("layer_ids and layer_types differ in length")
        if LOCAL in self.layer_types and self.local_window < 2:
            raise bad(f"local_window must be >= 2 tokens, got {self.local_window}")
        if self.activation not in ACTIVATIONS:
            raise bad(f"unknown activation '{self.activation}' (known: {', '.join(ACTIVATIONS)})")

    def with_attention(self, global_every: int | None = None, local_window: int | None = None) -> EncoderConfig:
        """A copy with a new alternating pattern and/or window."""
        changes: dict[str, Any] = {}
        if global_every is not None:
            changes["layer_types"] = alternating(self.num_layers, global_every)
        if local_window is not None:
            changes["local_window"] = local_window
        return dataclasses.replace(self, **changes)

    def select_layers(self, layers: list[int]) -> EncoderConfig:
        """The config of a student made of `layers` (indices into this model's layers)."""
        if not layers:
            raise NanonetError("--layers: select at least one layer")
        for i in layers:
            if not 0 <= i < self.num_layers:
                raise NanonetError(f"--layers: layer {i} out of range for a {self.num_layers}-layer model")
        if len(set(layers)) != len(layers):
            raise NanonetError(f"--layers: a layer is selected twice in {layers}")
        return dataclasses.replace(
            self,
            layer_types=[self.layer_types[i] for i in layers],
            layer_ids=[self.layer_ids[i] for i in layers],
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> EncoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise NanonetError(f"{source}: unknown encoder fields {unknown}")
        if d.get("family") not in FAMILIES:
            raise NanonetError(f"{source}: unknown model family '{d.get('family')}' (known: {', '.join(FAMILIES)})")
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise NanonetError(f"{source}: {e}") from None
        cfg.validate(source)
        return cfg


def from_hf_config(hf: dict[str, Any], source: str | Path = "config.json") -> EncoderConfig:
    """Translate a Hugging Face config.json (already parsed) into an EncoderConfig."""
    model_type = hf.get("model_type")
    try:
        if model_type == "bert":
            n = hf["num_hidden_layers"]
            return EncoderConfig(
                family="bert",
                vocab_size=hf["vocab_size"],
                hidden_size=hf["hidden_size"],
                num_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                layer_types=[GLOBAL] * n,
                max_position_embeddings=hf.get("max_position_embeddings", 512),
                max_length=hf.get("max_position_embeddings", 512),
                type_vocab_size=hf.get("type_vocab_size", 2),
                norm_eps=hf.get("layer_norm_eps", 1e-12),
                activation=_activation(hf.get("hidden_act", "gelu"), source),
                hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                pad_token_id=hf.get("pad_token_id") or 0,
            )
        if model_type == "distilbert":
            if hf.get("sinusoidal_pos_embds"):
                raise NanonetError(f"{source}: DistilBERT with sinusoidal positions is not supported")
            n = hf["n_layers"]
            return EncoderConfig(
                family="bert",
                vocab_size=hf["vocab_size"],
                hidden_size=hf["dim"],
                num_heads=hf["n_heads"],
                intermediate_size=hf["hidden_dim"],
                layer_types=[GLOBAL] * n,
                max_position_embeddings=hf.get("max_position_embeddings", 512),
                max_length=hf.get("max_position_embeddings", 512),
                type_vocab_size=0,  # DistilBERT has no token types
                norm_eps=1e-12,
                activation=_activation(hf.get("activation", "gelu"), source),
                hidden_dropout=hf.get("dropout", 0.1),
                attention_dropout=hf.get("attention_dropout", 0.1),
                pad_token_id=hf.get("pad_token_id") or 0,
            )
        if model_type == "modernbert":
            n = hf["num_hidden_layers"]
            if hf.get("layer_types"):
                types = [GLOBAL if t == "full_attention" else LOCAL for t in hf["layer_types"]]
            else:
                types = alternating(n, hf.get("global_attn_every_n_layers", 3))
            rope = hf.get("rope_parameters") or {}
            # new configs carry rope_parameters per layer type, older ones global/local_rope_theta
            theta_g = (rope.get("full_attention") or {}).get("rope_theta") or hf.get("global_rope_theta") or 160_000.0
            theta_l = (rope.get("sliding_attention") or {}).get("rope_theta") or hf.get("local_rope_theta") or 10_000.0
            max_pos = hf.get("max_position_embeddings", 8192)
            return EncoderConfig(
                family="modernbert",
                vocab_size=hf["vocab_size"],
                hidden_size=hf["hidden_size"],
                num_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                layer_types=types,
                local_window=hf.get("local_attention", 128),
                max_position_embeddings=max_pos,
                max_length=min(max_pos, 8192),
                type_vocab_size=0,
                norm_eps=hf.get("norm_eps", 1e-5),
                activation=_activation(hf.get("hidden_activation", "gelu"), source),
                hidden_dropout=hf.get("mlp_dropout", 0.0),
                attention_dropout=hf.get("attention_dropout", 0.0),
                rope_theta_global=float(theta_g),
                rope_theta_local=float(theta_l),
                pad_token_id=hf.get("pad_token_id") or 0,
            )
    except KeyError as e:
        raise NanonetError(f"{source}: missing field {e} for model_type '{model_type}'") from None
    raise NanonetError(f"{source}: unknown model family '{model_type}' (known: bert, distilbert, modernbert)")


def _activation(name: str, source: str | Path) -> str:
    if name not in _HF_ACT:
        raise NanonetError(f"{source}: unsupported activation '{name}' (known: {', '.join(_HF_ACT)})")
    return _HF_ACT[name]
