"""Label propagation: spread the few labels over the unlabeled pool through a kNN graph.

The teacher's pretrained sentence embeddings already group texts by topic; a kNN graph
over the labeled and unlabeled texts carries each label to its neighbours (Zhou et al.,
"Learning with local and global consistency", 2004; used for deep semi-supervised
learning by Iscen et al., CVPR 2019). The result is one class distribution per
unlabeled text and a certainty weight (1 - normalised entropy); the teacher learns
from them alongside its labels, so the students distil from a better teacher.

Everything here is deterministic: the same embeddings give the same targets, so a
resumed run recomputes exactly what the interrupted one had. A run can rerun it on the
training teacher's embeddings (`refresh_steps`), which by then separate the classes
better than the pretrained ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nanonet.data.tokens import Tokenized
from nanonet.model.encoder import NanoClassifier
from nanonet.train.evaluate import embed
from nanonet.train.progress import Advance


@dataclass
class GraphTargets:
    probs: torch.Tensor  # (U, C) propagated class distribution of every unlabeled text
    weights: torch.Tensor  # (U,) certainty in [0, 1]: 1 - entropy / log C

    def summary(self) -> dict:
        return {"texts": len(self.weights), "mean_certainty": round(float(self.weights.mean()), 4) if len(self.weights) else None}


def knn_graph(x: torch.Tensor, k: int, gamma: float = 3.0, chunk: int = 2048) -> torch.Tensor:
    """Symmetric sparse affinity matrix (N, N): each row's k most similar rows (cosine),
    weighted by max(similarity, 0) ** gamma; no self-loops. Built in row chunks so memory
    stays O(N k), not O(N^2)."""
    n = len(x)
    k = min(k, n - 1)
    x = torch.nn.functional.normalize(x.float(), dim=-1)
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T  # (c, N)
        sim[torch.arange(len(sim)), torch.arange(start, start + len(sim))] = -math.inf  # no self-loops
        top, idx = sim.topk(k, dim=-1)
        rows.append(torch.arange(start, start + len(sim)).repeat_interleave(k))
        cols.append(idx.reshape(-1))
        vals.append(top.clamp_min(0).pow(gamma).reshape(-1))
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    w = torch.sparse_coo_tensor(torch.stack([torch.cat([r, c]), torch.cat([c, r])]), torch.cat([v, v]), (n, n), check_invariants=False)
    return w.coalesce()


def propagate(
    labeled: torch.Tensor,
    labels: torch.Tensor,
    unlabeled: torch.Tensor,
    num_classes: int,
    k: int = 10,
    alpha: float = 0.99,
    iterations: int = 50,
) -> GraphTargets:
    """Class distributions for `unlabeled` (U, H) from `labeled` (L, H) embeddings and their labels.

    Iterates F <- alpha * S F + (1 - alpha) * Y with S = D^-1/2 W D^-1/2 (the normalised kNN
    graph) and Y the one-hot labels, then normalises each row of F to a distribution."""
    x = torch.cat([labeled, unlabeled]).float()
    w = knn_graph(x, k)
    degree = torch.sparse.sum(w, dim=1).to_dense()
    inv_sqrt = degree.clamp_min(1e-12).rsqrt()
    idx, val = w.indices(), w.values()
    s = torch.sparse_coo_tensor(idx, val * inv_sqrt[idx[0]] * inv_sqrt[idx[1]], w.shape, check_invariants=False).coalesce()
    y = torch.zeros(len(x), num_classes)
    y[torch.arange(len(labeled)), labels.long()] = 1.0
    f = y.clone()
    for _ in range(iterations):
        f = alpha * torch.sparse.mm(s, f) + (1 - alpha) * y
    f = f[len(labeled) :].clamp_min(0)
    mass = f.sum(-1, keepdim=True)
    # a text the graph never reached (no path to a label) gets a uniform distribution, weight 0
    probs = torch.where(mass > 0, f / mass.clamp_min(1e-12), torch.full_like(f, 1.0 / num_classes))
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    weights = (1.0 - entropy / math.log(num_classes)).clamp(0.0, 1.0) if num_classes > 1 else torch.ones(len(f))
    return GraphTargets(probs, weights)


def propagate_from(
    teacher: NanoClassifier,
    lab: Tokenized,
    lab_y: torch.Tensor,
    unl: Tokenized,
    num_classes: int,
    k: int,
    max_tokens: int,
    device: torch.device,
    unl_embeddings: torch.Tensor | None = None,
    advance: Advance | None = None,
    alpha: float = 0.99,
) -> tuple[GraphTargets, torch.Tensor, torch.Tensor]:
    """Label propagation (`propagate`, with `k` and `alpha`) over `teacher`'s current
    embeddings of the labeled and unlabeled texts (those of the unlabeled texts given when
    already computed); `advance` hears of every text embedded. Returns the targets and the (L, H) labeled and (U, H) unlabeled
    embeddings they came from."""
    teacher.to(device)
    if unl_embeddings is None:
        unl_embeddings = embed(teacher, unl, max_tokens, device, advance)
    lab_embeddings = embed(teacher, lab, max_tokens, device, advance)
    return propagate(lab_embeddings, lab_y, unl_embeddings, num_classes, k=k, alpha=alpha), lab_embeddings, unl_embeddings


def most_certain_per_class(targets: GraphTargets, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels: within each class (the propagated label's argmax), the `share` of its
    texts the graph is most certain of (rounded, at least one per class that has any). A threshold per
    class, not one for all, so that a class the graph is less sure of still gets its share
    (as the per-class thresholds of FreeMatch and SoftMatch do). Returns (rows, labels),
    rows in ascending order. A text the graph never reached (weight 0) is never kept."""
    pseudo = targets.probs.argmax(-1)
    reached = targets.weights > 0
    kept = []
    for c in pseudo[reached].unique():
        rows = ((pseudo == c) & reached).nonzero().squeeze(-1)
        n = max(1, round(share * len(rows)))
        order = torch.sort(targets.weights[rows], descending=True, stable=True).indices
        kept.append(rows[order[:n]])
    rows = torch.sort(torch.cat(kept)).values if kept else torch.empty(0, dtype=torch.long)
    return rows, pseudo[rows]


def refresh_steps(steps: int, refreshes: int) -> list[int]:
    """The steps before which label propagation reruns: `refreshes` points evenly spaced
    inside the run (1 refresh in 146 steps: before step 73, after the first of 2 epochs)."""
    return sorted({round(steps * i / (refreshes + 1)) for i in range(1, refreshes + 1)} - {0})


def changed_share(old: GraphTargets, new: GraphTargets) -> float:
    """The share of unlabeled texts whose most likely propagated label changed."""
    return float((new.probs.argmax(-1) != old.probs.argmax(-1)).float().mean()) if len(new.weights) else 0.0
