"""Heads that start where a linear probe ends: logistic regression on a member's embeddings.

A new head starts random, and a run with many classes and short texts has few steps to
learn it: on a 64-class set a default run gives its students about 15 steps, and they
ended far below their teacher. Fitted on the member's embeddings of the labeled texts
(what SetFit does for its head, and what a linear probe measures), each head starts at
the accuracy its frozen encoder already allows, and training goes on from there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nanonet.data.tokens import Tokenized
from nanonet.model.encoder import NanoClassifier
from nanonet.train.evaluate import embed


def fit_member_head(model: NanoClassifier, lab: Tokenized, lab_y: torch.Tensor, num_classes: int, max_tokens: int, device) -> float:
    """The member's head fitted on its eval-mode embeddings of the labeled texts; the training loss."""
    model.to(device)
    return fit_head(model, embed(model, lab, max_tokens, device), lab_y, num_classes)


def fit_head(model: NanoClassifier, embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300) -> float:
    """Multinomial logistic regression of the labels on fixed embeddings (L-BFGS, a light
    L2 penalty as scikit-learn's default C=1 has), written into the model's head. Returns
    the final training loss."""
    x = embeddings.float()
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    y = labels.long().cpu()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * (w * w).sum() / len(x)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        model.head.weight.copy_(w.detach().to(model.head.weight))
        model.head.bias.copy_(b.detach().to(model.head.bias))
        return float(F.cross_entropy(x @ w.T + b, y))
