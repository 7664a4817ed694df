"""Classifier heads that start as nearest-centroid classifiers of the labeled examples.

With a handful of labels, a random head makes the first steps (and the teacher's first
soft targets) noise; a head whose logits are -|x - mu_c|^2 / 2 (up to a shared term)
already classifies as well as the class prototypes of the pretrained embeddings do."""

from __future__ import annotations

import numpy as np
import torch

from nanonet.data.tokens import Tokenized, budget_batches
from nanonet.model.encoder import NanoClassifier
from nanonet.train.views import packed_rows

TARGET_LOGIT_STD = 4.0  # spread of the initial logits across classes


@torch.no_grad()
def init_head_from_prototypes(model: NanoClassifier, tokens: Tokenized, labels: list[int], num_classes: int) -> None:
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    emb = torch.zeros(len(tokens), model.config.hidden_size, device=device)
    for rows in budget_batches(tokens.lengths, 16384, rng=None):
        emb[torch.as_tensor(rows, device=device)] = model.embed(packed_rows(tokens, rows).to(device)).float()
    y = torch.as_tensor(np.asarray(labels), device=device)
    mu = torch.stack([emb[y == c].mean(0) for c in range(num_classes)])  # (C, H)
    weight, bias = mu, -0.5 * (mu * mu).sum(-1)
    logits = emb @ weight.T + bias
    scale = TARGET_LOGIT_STD / float((logits - logits.mean(-1, keepdim=True)).std().clamp_min(1e-6))
    model.head.weight.copy_(weight * scale)
    model.head.bias.copy_(bias * scale)
    model.train(was_training)
