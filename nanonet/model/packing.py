"""Packed ("unpadded") batches: the tokens of B sequences laid end to end.

A batch of sequences of lengths l_0..l_{B-1} becomes one `[T]` tensor of token ids,
T = sum(l_b), with `cu_seqlens = [0, l_0, l_0+l_1, ..., T]` (int32, the layout every
varlen attention kernel takes) and `max_seqlen = max(l_b)`. No pad token ever reaches
a layer; padding happens only inside backends that need it (padded SDPA on a CPU),
and only for the duration of one attention call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Packed:
    """A packed batch. Shapes: T total tokens, B sequences."""

    input_ids: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (B+1,) int32, starts at 0, ends at T
    max_seqlen: int
    position_ids: torch.Tensor  # (T,) int64, position of each token inside its sequence
    token_type_ids: torch.Tensor | None = None  # (T,) int64, BERT family only
    # per-batch values that every layer would otherwise recompute (masks, RoPE tables)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def lengths(self) -> torch.Tensor:  # (B,) int64
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

    @property
    def seq_index(self) -> torch.Tensor:
        """(T,) int64: the sequence each token belongs to."""
        if "seq_index" not in self.cache:
            self.cache["seq_index"] = torch.repeat_interleave(torch.arange(self.batch_size, device=self.input_ids.device), self.lengths)
        return self.cache["seq_index"]

    def to(self, device: torch.device | str) -> Packed:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Packed(move(self.input_ids), move(self.cu_seqlens), self.max_seqlen, move(self.position_ids), move(self.token_type_ids))


def _cu_seqlens(lengths: torch.Tensor) -> torch.Tensor:
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    torch.cumsum(lengths, 0, out=cu[1:])
    return cu


def pack_sequences(sequences: Sequence[Sequence[int]], token_types: Sequence[Sequence[int]] | None = None) -> Packed:
    """Pack lists of token ids (no padding anywhere) into one batch."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pack_sequences needs at least one sequence and no empty sequence")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    ids = torch.tensor([t for s in sequences for t in s], dtype=torch.int64)
    positions = torch.cat([torch.arange(n) for n in lengths.tolist()])
    types = None
    if token_types is not None:
        types = torch.tensor([t for s in token_types for t in s], dtype=torch.int64)
    return Packed(ids, _cu_seqlens(lengths), int(lengths.max()), positions, types)


def pack_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> Packed:
    """Pack a padded `[B, L]` batch (what a tokenizer returns) by dropping pad positions."""
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    if bool((lengths == 0).any()):
        raise ValueError("pack_padded: a row of attention_mask has no real token")
    positions = (mask.cumsum(1) - 1)[mask]
    types = token_type_ids[mask] if token_type_ids is not None else None
    return Packed(input_ids[mask], _cu_seqlens(lengths), int(lengths.max()), positions, types)


def pad(x: torch.Tensor, batch: Packed, length: int | None = None) -> torch.Tensor:
    """(T, ...) -> (B, L, ...), right-padded with zeros; L defaults to max_seqlen."""
    length = length or batch.max_seqlen
    out = x.new_zeros((batch.batch_size * length, *x.shape[1:]))
    out[batch.seq_index * length + batch.position_ids] = x
    return out.view(batch.batch_size, length, *x.shape[1:])


def unpad(x: torch.Tensor, batch: Packed) -> torch.Tensor:
    """(B, L, ...) right-padded -> (T, ...): the inverse of `pad`."""
    length = x.shape[1]
    return x.reshape(-1, *x.shape[2:])[batch.seq_index * length + batch.position_ids]
