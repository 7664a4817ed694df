"""The padded CPU graph: the whole classifier on (B, L) token ids and an attention mask.

ONNX Runtime's CPU provider has no varlen attention kernel (a packed graph with a
block-diagonal mask measured 2.7x slower than a padded one), so the exported graph is
padded and the runtime keeps padding small by sorting a batch by length. The encoder's
own blocks run unchanged on (B, L, H); only attention and pooling differ from the packed
path, and both live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanonet.model.attention import window_mask
from nanonet.model.encoder import NanoClassifier


@dataclass
class PaddedBatch:
    """What the encoder's blocks read from a batch, for (B, L) padded input."""

    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64, 1 for real tokens
    token_type_ids: torch.Tensor | None
    position_ids: torch.Tensor  # (1, L): padded sequences all start at position 0
    mask_value: float = torch.finfo(torch.float32).min
    cache: dict[str, Any] = field(default_factory=dict)

    def bias(self, window: int) -> torch.Tensor:
        """(B, 1, L, L) additive mask: 0 where query i may attend key j, `mask_value` elsewhere.

        A finite value (not -inf) so that a pad query row with no key in its window
        stays finite; pad rows are never read. Cached per window: every global layer and
        every local layer shares one."""
        key = f"bias:{window}"
        if key not in self.cache:
            pos = self.position_ids[0]
            # (B, 1, L, L) even for global layers: ONNX's Attention wants the query axis in full
            keys = self.attention_mask[:, None, None, :].bool() & window_mask(pos, window)  # (B, 1, L, L)
            zero = torch.zeros((), dtype=torch.float32)
            self.cache[key] = torch.where(keys, zero, torch.tensor(self.mask_value, dtype=torch.float32))
        return self.cache[key]

    @staticmethod
    def attend(q, k, v, batch: PaddedBatch, window: int, scale: float, dropout_p: float) -> torch.Tensor:
        """q, k, v (B, L, nh, hs) -> (B, L, nh, hs) through SDPA with the padding/band mask."""
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hs)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=batch.bias(window).to(q.dtype), scale=scale)
        return out.transpose(1, 2)


class PaddedClassifier(nn.Module):
    """`forward(input_ids, attention_mask[, token_type_ids]) -> (logits, probs)`, for export."""

    def __init__(self, model: NanoClassifier, mask_value: float = torch.finfo(torch.float32).min):
        super().__init__()
        self.model = model.eval()
        self.mask_value = mask_value
        self.uses_token_types = model.encoder.embeddings.token_type is not None

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if self.uses_token_types else [])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        L = input_ids.shape[1]
        position_ids = torch.arange(L, device=input_ids.device)[None, :]
        batch = PaddedBatch(input_ids, attention_mask, token_type_ids, position_ids, self.mask_value)
        x = self.model.encoder(batch)  # (B, L, H)
        if self.model.pooling == "cls":
            pooled = x[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        logits = self.model.head(pooled)  # (B, C)
        return logits, logits.softmax(-1)
