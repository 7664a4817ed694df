"""Data views: each student sees its own perturbation of the same unlabeled batch."""

from __future__ import annotations

import numpy as np
import torch

from nanonet.data.tokens import Tokenized
from nanonet.model.packing import Packed, pack_sequences


def packed_rows(tokens: Tokenized, rows: np.ndarray) -> Packed:
    return pack_sequences([tokens.row(int(i)).tolist() for i in rows])


def cutoff(batch: Packed, rate: float, generator: torch.Generator) -> Packed:
    """Drop a `rate` share of each sequence's tokens, never its first or last ([CLS]/[SEP]).

    The result is re-packed: shorter sequences with fresh positions, as if the words had
    never been there (token cutoff)."""
    keep = torch.rand(batch.num_tokens, generator=generator) >= rate
    starts, ends = batch.cu_seqlens[:-1].long(), batch.cu_seqlens[1:].long() - 1
    keep[starts] = True
    keep[ends] = True
    bounds = batch.cu_seqlens.tolist()
    ids = batch.input_ids
    return pack_sequences([ids[s:e][keep[s:e]].tolist() for s, e in zip(bounds[:-1], bounds[1:])])
