"""`nanonet select --precision int8`: the embedding model's linear layers really run in int8,
the fp32 model it came from is left alone, and its embeddings stay close to fp32's."""

from __future__ import annotations

import numpy as np
import torch
from conftest import write_synthetic_data

from nanonet.active.pool import embed_texts
from nanonet.active.select import int8_linear, teacher_embedder, with_precision
from nanonet.data.tables import iter_texts

CPU = torch.device("cpu")


def test_int8_replaces_every_linear_layer_of_a_copy(tiny_bert_dir):
    embedder = teacher_embedder(str(tiny_bert_dir), 32)
    fp32_linears = sum(isinstance(m, torch.nn.Linear) for m in embedder.model.modules())
    q = int8_linear(embedder.model)
    assert fp32_linears > 0
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert sum(type(m) is torch.ao.nn.quantized.dynamic.Linear for m in q.modules()) == fp32_linears
    assert sum(type(m) is torch.nn.Linear for m in embedder.model.modules()) == fp32_linears  # the original is untouched


def test_int8_embeddings_are_close_to_fp32_but_not_equal(tiny_bert_dir, tmp_path):
    data = write_synthetic_data(tmp_path, {"train": 20})
    texts = list(iter_texts(data / "train.jsonl", "text"))
    embedder = teacher_embedder(str(tiny_bert_dir), 32)
    fp32 = embed_texts(iter(texts), embedder.model, embedder.tokenizer_file, 32, 4096, CPU).vectors
    int8 = with_precision(embedder, "int8", CPU)
    assert int8.model is not embedder.model
    q = embed_texts(iter(texts), int8.model, int8.tokenizer_file, 32, 4096, CPU).vectors
    cosine = np.sum(fp32 * q, axis=1)  # both unit norm
    assert cosine.min() > 0.98
    assert not np.allclose(fp32, q, atol=1e-6)  # it did run in int8
    assert with_precision(embedder, "fp32", CPU) is embedder
