"""Which texts to label, from unit-norm embeddings of a pool (numpy only, deterministic for a seed).

Cold start: spherical k-means with as many centres as the budget, and from each cluster the
text nearest its centre: representative texts (each stands for a cluster of the pool) that
are diverse (one per cluster). In the low-budget regime this beats uncertainty and plain
diversity sampling (Hacohen et al., "Active learning on a budget", ICML 2022; Chang et al.,
"On training instance selection for few-shot neural text generation", ACL 2021).

Next round: the texts the model is least sure of (the margin between its two most likely
classes, averaged over a committee when the run kept its teacher), spread out by clustering
the most uncertain candidates and taking the most uncertain text of each cluster, so one
confusing region does not take the whole budget (in the spirit of cluster-margin sampling,
Citovsky et al., NeurIPS 2021).

Either way a text that duplicates one already picked or labeled (same words, or cosine
similarity at least `NEAR_DUPLICATE`) is never picked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

NEAR_DUPLICATE = 0.95  # cosine similarity of the embeddings from which two texts count as one
CANDIDATES_PER_PICK = 10  # next round: the most uncertain B * this texts are clustered into B


@dataclass
class Pick:
    rows: list[int]  # pool rows, in the order a person should label them
    scores: list[float]  # cold start: similarity to the cluster's centre; next round: uncertainty
    clusters: int  # clusters formed


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25, chunk: int = 32768) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of unit-norm rows `x` (N, H) into `k` clusters: greedy k-means++
    seeding (Arthur and Vassilvitskii, 2007; each centre the best of 2 + log k draws, as
    scikit-learn does, so a small cluster far away is not left out), then Lloyd steps on
    cosine similarity. Returns the (k, H) unit-norm centres and each row's cluster.
    Deterministic for `seed`."""
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng([seed, 23])
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(n))
    centres[0] = x[first]
    dist = np.maximum(1.0 - x @ x[first], 0.0)  # 1 - cosine, to the nearest centre so far
    for i in range(1, k):
        total = float(dist.sum())
        draws = rng.choice(n, size=trials, p=dist / total) if total > 0 else rng.integers(n, size=trials)
        candidates = np.minimum(dist[None], np.maximum(1.0 - x[draws] @ x.T, 0.0))  # (trials, N)
        best = int(candidates.sum(1).argmin())
        centres[i] = x[draws[best]]
        dist = candidates[best]
    assign = np.full(n, -1)
    for _ in range(iterations):
        new = _nearest(x, centres, chunk)
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0
        centres[filled] = sums[filled] / norms[filled]  # an emptied centre stays where it was
    return centres, assign


def _nearest(x: np.ndarray, centres: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([(x[s : s + chunk] @ centres.T).argmax(1) for s in range(0, len(x), chunk)])


class _Picked:
    """The picks so far, refusing near-duplicates of them and of the texts already labeled."""

    def __init__(self, x: np.ndarray, keys: np.ndarray, labeled: np.ndarray | None, labeled_keys: np.ndarray | None):
        self.x, self.keys = x, keys
        self.rows: list[int] = []
        self.scores: list[float] = []
        self.taken_keys = set(labeled_keys.tolist()) if labeled_keys is not None else set()
        self.against = [labeled] if labeled is not None and len(labeled) else []

    def admits(self, row: int) -> bool:
        if self.keys[row] in self.taken_keys:
            return False
        return not any(float((block @ self.x[row]).max()) >= NEAR_DUPLICATE for block in self.against)

    def take(self, row: int, score: float) -> None:
        self.rows.append(row)
        self.scores.append(score)
        self.taken_keys.add(self.keys[row])
        self.against.append(self.x[row][None])


def cold_start(
    x: np.ndarray,
    keys: np.ndarray,
    budget: int,
    seed: int,
    labeled: np.ndarray | None = None,
    labeled_keys: np.ndarray | None = None,
) -> Pick:
    """`budget` representative, diverse rows of the pool `x` (N, H, unit-norm); `keys` (N,)
    identify texts with the same words. Rows duplicating a labeled text are never picked."""
    allowed = _distinct_allowed(keys, labeled_keys)
    _check_budget(budget, len(allowed))
    sub = x[allowed]
    centres, assign = kmeans(sub, budget, seed)
    picked = _Picked(x, keys, labeled, labeled_keys)
    sim = np.einsum("nh,nh->n", sub, centres[assign])
    sizes = np.bincount(assign, minlength=len(centres))
    for c in sorted(range(len(centres)), key=lambda c: (-sizes[c], c)):  # the largest clusters choose first
        members = np.flatnonzero(assign == c)
        for j in members[np.argsort(-sim[members], kind="stable")]:
            if picked.admits(int(allowed[j])):
                picked.take(int(allowed[j]), float(sim[j]))
                break
    _fill_farthest(picked, allowed, budget)
    return Pick(picked.rows, picked.scores, int((sizes > 0).sum()))


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): 0 where the model is sure, 1 where its two likeliest classes tie."""
    top = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.concatenate([np.zeros_like(probs), probs], 1)
    return 1.0 - (top[:, 1] - top[:, 0])


def next_round(
    x: np.ndarray,
    keys: np.ndarray,
    probs: np.ndarray,
    budget: int,
    seed: int,
    labeled: np.ndarray | None = None,
    labeled_keys: np.ndarray | None = None,
) -> Pick:
    """`budget` rows the model is unsure of (`probs` (N, C), the committee's mean), spread
    over the pool: the most uncertain `budget * CANDIDATES_PER_PICK` allowed rows are
    clustered into `budget` clusters and each gives its most uncertain row."""
    allowed = _distinct_allowed(keys, labeled_keys)
    _check_budget(budget, len(allowed))
    unsure = margin_uncertainty(probs)
    order = allowed[np.argsort(-unsure[allowed], kind="stable")]
    candidates = order[: budget * CANDIDATES_PER_PICK]
    _, assign = kmeans(x[candidates], budget, seed)
    picked = _Picked(x, keys, labeled, labeled_keys)
    best_first = sorted(range(assign.max() + 1), key=lambda c: (-unsure[candidates[assign == c]].max(), c))
    for c in best_first:
        members = candidates[assign == c]  # already most uncertain first
        for row in members:
            if picked.admits(int(row)):
                picked.take(int(row), float(unsure[row]))
                break
    for row in order:  # clusters made only of duplicates: the next most uncertain rows
        if len(picked.rows) >= budget:
            break
        if picked.admits(int(row)):
            picked.take(int(row), float(unsure[row]))
    _check_filled(picked, budget)
    return Pick(picked.rows, picked.scores, int(assign.max() + 1))


def _distinct_allowed(keys: np.ndarray, labeled_keys: np.ndarray | None) -> np.ndarray:
    """The first row of each distinct text, leaving out texts already labeled."""
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)
    if labeled_keys is not None and len(labeled_keys):
        first = first[~np.isin(keys[first], labeled_keys)]
    return first


def _check_budget(budget: int, available: int) -> None:
    if budget > available:
        raise ValueError(f"the pool has {available} distinct texts not yet labeled, fewer than the budget of {budget}")


def _fill_farthest(picked: _Picked, allowed: np.ndarray, budget: int) -> None:
    """Clusters that gave no pick (all their texts duplicates): the row farthest from every
    pick so far (k-center greedy), one at a time, until the budget is met."""
    x = picked.x[allowed]
    nearest = np.max(x @ picked.x[picked.rows].T, axis=1) if picked.rows else np.full(len(allowed), -1.0)
    open_rows = np.ones(len(allowed), dtype=bool)
    while len(picked.rows) < budget and open_rows.any():
        j = int(np.flatnonzero(open_rows)[np.argmin(nearest[open_rows])])
        open_rows[j] = False
        if picked.admits(int(allowed[j])):
            picked.take(int(allowed[j]), float(nearest[j]))
            nearest = np.maximum(nearest, x @ x[j])
    _check_filled(picked, budget)


def _check_filled(picked: _Picked, budget: int) -> None:
    if len(picked.rows) < budget:
        raise ValueError(f"the pool has only {len(picked.rows)} texts that are not near-duplicates, fewer than the budget of {budget}")


def text_key(text: str) -> int:
    """Texts with the same words, ignoring case and spacing, get the same key (a 63-bit hash)."""
    digest = hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
