"""What `nanonet info` reports about a model, as a plain dict (JSON-ready)."""

from __future__ import annotations

from pathlib import Path

import torch

from nanonet.model.attention import pick_backend
from nanonet.model.checkpoint import is_checkpoint, load_checkpoint, make_student
from nanonet.model.encoder import NanoEncoder
from nanonet.model.hf import load_pretrained


def load_any(spec: str) -> tuple[NanoEncoder, dict]:
    """An encoder from a nanonet checkpoint or any Hugging Face source, plus facts about where it came from."""
    if is_checkpoint(Path(spec)):
        ckpt = load_checkpoint(spec)
        encoder = ckpt.model.encoder
        head = sum(p.numel() for p in ckpt.model.parameters()) - sum(p.numel() for p in ckpt.model.encoder.parameters())
        return encoder, {
            "kind": "nanonet checkpoint",
            "path": str(ckpt.path),
            "pooling": ckpt.model.pooling,
            "labels": ckpt.labels,
            "head_parameters": head,
        }
    pre = load_pretrained(spec)
    return pre.encoder, {"kind": "hugging face checkpoint", "path": str(pre.path), "pooling": pre.pooling}


def describe_model(spec: str, layers: list[int] | None = None, global_every: int | None = None, local_window: int | None = None) -> dict:
    encoder, origin = load_any(spec)
    if layers is not None or global_every is not None or local_window is not None:
        all_layers = list(range(encoder.config.num_layers))
        encoder = make_student(encoder, all_layers if layers is None else layers, global_every, local_window)
    cfg = encoder.config
    params = list(encoder.named_parameters())
    backends = [{"device": "cpu", "dtype": "float32", "backend": pick_backend(torch.device("cpu"), torch.float32, cfg.head_size).name}]
    if torch.cuda.is_available():
        cuda = torch.device("cuda", torch.cuda.current_device())
        backends.append({"device": "cuda", "dtype": "bfloat16", "backend": pick_backend(cuda, torch.bfloat16, cfg.head_size).name})
    return {
        "source": spec,
        **{k: v for k, v in origin.items() if k != "path"},
        "path": origin["path"],
        "family": cfg.family,
        "layers": cfg.layer_ids,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "num_heads": cfg.num_heads,
        "head_size": cfg.head_size,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_length": cfg.max_length,
        "attention": [
            {"layer": i, "source_layer": cfg.layer_ids[i], "type": t, "window": cfg.local_window if t == "local" else None}
            for i, t in enumerate(cfg.layer_types)
        ],
        "parameters": sum(p.numel() for _, p in params),
        "bias_parameters": sum(p.numel() for n, p in params if n.endswith(".bias")),
        "backends": backends,
    }
