"""The packed graph for TensorRT: `model.trt.onnx`.

Inputs: `input_ids` [T] int32 (every real token of the batch, back to back),
`cu_seqlens` [B+1] int32 (sequence offsets), `max_seqlen` [S] int32 whose *shape* is the
longest sequence (TensorRT's own variable-length BERT carried it the same way, so the
optimization profile can bound it). Output: `logits` [B, C]. No padding anywhere: the
encoder's own blocks run on [T, H], each attention is one VarlenAttention plugin node,
positions, pooling and the head work on packed tokens.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nanonet.export.tensorrt.varlen_op import onnx_translation, register_schema, varlen_attention
from nanonet.model.encoder import NanoClassifier

INPUTS = ["input_ids", "cu_seqlens", "max_seqlen"]
OUTPUTS = ["logits"]
OPSET = 18


@dataclass
class PackedExportBatch:
    """What the encoder's blocks read from a batch, computed in-graph from cu_seqlens."""

    input_ids: torch.Tensor  # (T,) int64
    position_ids: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (B+1,) int32
    max_seqlen: torch.Tensor  # (S,): shape carrier
    token_type_ids: torch.Tensor | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def attend(self, q, k, v, batch: PackedExportBatch, window: int, scale: float, dropout_p: float) -> torch.Tensor:
        T, nh, hs = q.shape
        qkv = torch.stack((q, k, v), dim=1).reshape(T, 3 * nh * hs)  # the plugin's fused layout
        out = varlen_attention(qkv, batch.cu_seqlens, batch.max_seqlen, nh, hs, float(scale), int(window))
        return out.view(T, nh, hs)


class PackedClassifier(nn.Module):
    """`forward(input_ids [T], cu_seqlens [B+1], max_seqlen [S]) -> logits [B, C]`."""

    def __init__(self, model: NanoClassifier):
        super().__init__()
        self.model = model.eval()

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: torch.Tensor) -> torch.Tensor:
        ids = input_ids.long()
        T = ids.shape[0]
        cu = cu_seqlens.long()
        t = torch.arange(T, device=ids.device)
        seq_index = (t[:, None] >= cu[None, 1:]).sum(1)  # (T,): the sequence of each token
        positions = t - cu[seq_index]
        batch = PackedExportBatch(ids, positions, cu_seqlens, max_seqlen)
        x = self.model.encoder(batch)  # (T, H)
        if self.model.pooling == "cls":
            pooled = x[cu[:-1]]
        else:  # a one-hot (B, T) matrix: a MatMul TensorRT runs well, no scatter
            B = cu.shape[0] - 1
            member = (seq_index[None, :] == torch.arange(B, device=ids.device)[:, None]).to(x.dtype)
            pooled = (member @ x) / member.sum(1, keepdim=True).clamp(min=1.0)
        return self.model.head(pooled)


def example_inputs(lengths: list[int], vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(5, vocab - 1), vocab, (sum(lengths),), generator=g, dtype=torch.int32)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return ids, cu, torch.zeros(max(lengths), dtype=torch.int32)


def export_packed(model: NanoClassifier, path: Path) -> dict:
    """Write model.trt.onnx (VarlenAttention plugin nodes), checked by onnx.checker."""
    import onnx

    register_schema()  # onnxscript builds the plugin node from the registered schema
    wrapper = PackedClassifier(model)
    args = example_inputs([7, 3, 12], model.config.vocab_size)
    tokens, seqs, longest = torch.export.Dim("tokens", min=2), torch.export.Dim("batch", min=1), torch.export.Dim("max_seqlen", min=2)
    shapes = {"input_ids": {0: tokens}, "cu_seqlens": {0: seqs + 1}, "max_seqlen": {0: longest}}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=INPUTS,
            output_names=OUTPUTS,
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=shapes,
            custom_translation_table=onnx_translation(),
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    nodes = [n for n in m.graph.node if n.op_type == "VarlenAttention"]
    return {"file": path.name, "inputs": INPUTS, "outputs": OUTPUTS, "opset": OPSET, "plugin_nodes": len(nodes)}
