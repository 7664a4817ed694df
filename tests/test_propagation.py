"""Label propagation over a kNN graph, and the teacher's loss on its labels."""

from __future__ import annotations

import torch

from nanonet.train import losses
from nanonet.train.propagation import GraphTargets, knn_graph, most_certain_per_class, propagate


def clusters(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three tight clusters around orthogonal directions; (3n, 8) points and their classes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:3] * 5
    y = torch.arange(3).repeat_interleave(n)
    return centres[y] + torch.randn(3 * n, 8, generator=g) * 0.5, y


def test_knn_graph_is_symmetric_without_self_loops():
    x, _ = clusters(10)
    w = knn_graph(x, k=4, chunk=7).to_dense()  # a chunk size that does not divide N
    assert torch.equal(w, w.T)
    assert w.diagonal().abs().max() == 0
    assert ((w > 0).sum(1) >= 4).all()


def test_propagation_recovers_clusters_from_one_label_each():
    x, y = clusters(30)
    first = torch.tensor([0, 30, 60])  # one labeled point per cluster
    rest = torch.tensor([i for i in range(90) if i not in first.tolist()])
    g = propagate(x[first], y[first], x[rest], num_classes=3, k=5)
    assert g.probs.shape == (87, 3)
    torch.testing.assert_close(g.probs.sum(-1), torch.ones(87))
    assert torch.equal(g.probs.argmax(-1), y[rest])
    assert g.weights.min() > 0.5  # tight clusters: certain labels


def test_propagation_is_uncertain_between_clusters():
    x, y = clusters(30)
    first = torch.tensor([0, 30, 60])
    midpoint = (x[:30].mean(0) + x[30:60].mean(0)).unsqueeze(0) / 2
    g = propagate(x[first], y[first], torch.cat([x[1:30], midpoint]), num_classes=3, k=5)
    assert g.weights[-1] < g.weights[:-1].min()


def test_propagated_loss():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    right = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    assert losses.propagated(right, probs, torch.ones(2)) < 1e-3
    assert losses.propagated(-right, probs, torch.ones(2)) > 5
    assert losses.propagated(-right, probs, torch.zeros(2)) == 0  # no certainty, no loss
    # the weights pick rows: only the first (wrong) row counts
    mixed = torch.tensor([[-5.0, 5.0], [-5.0, 5.0]])
    assert losses.propagated(mixed, probs, torch.tensor([1.0, 0.0])) > 5
    assert losses.propagated(mixed, probs, torch.tensor([0.0, 1.0])) < 1e-3
    # nearly uncertain rows pull little: the weights' sum is floored at 1
    assert losses.propagated(-right, probs, torch.full((2,), 1e-3)) < 0.05


def test_most_certain_per_class_keeps_each_classs_own_share():
    # class 0 (rows 0-3) is certain, class 1 (rows 4-7) is not: one threshold for all would
    # keep class 0 only; each class keeps its own most certain half
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 4)
    weights = torch.tensor([0.9, 0.5, 0.8, 0.7, 0.10, 0.30, 0.20, 0.05])
    rows, labels = most_certain_per_class(GraphTargets(probs, weights), 0.5)
    assert rows.tolist() == [0, 2, 5, 6]
    assert labels.tolist() == [0, 0, 1, 1]


def test_most_certain_per_class_keeps_one_of_a_small_class_and_all_at_share_one():
    probs = torch.tensor([[0.9, 0.1, 0.0]] * 5 + [[0.1, 0.1, 0.8]])  # class 1 predicted nowhere, class 2 once
    weights = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    rows, labels = most_certain_per_class(GraphTargets(probs, weights), 0.1)
    assert rows.tolist() == [0, 5] and labels.tolist() == [0, 2]
    rows, _ = most_certain_per_class(GraphTargets(probs, weights), 1.0)
    assert rows.tolist() == list(range(6))


def test_most_certain_per_class_never_keeps_a_text_the_graph_did_not_reach():
    # an unreached text has a uniform distribution (argmax: class 0) and weight 0
    probs = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.5, 0.5]])
    weights = torch.tensor([0.0, 0.6, 0.0])
    rows, labels = most_certain_per_class(GraphTargets(probs, weights), 1.0)
    assert rows.tolist() == [1] and labels.tolist() == [1]


def closed_form(x: torch.Tensor, y: torch.Tensor, labeled: int, num_classes: int, k: int, alpha: float) -> torch.Tensor:
    """Zhou et al.'s fixed point, solved directly: F = (I - alpha S)^-1 Y with S = D^-1/2 W D^-1/2
    over a dense symmetric kNN graph built here from cosine similarities cubed; each unlabeled
    row normalised to a distribution."""
    z = torch.nn.functional.normalize(x, dim=-1)
    sim = z @ z.T
    sim.fill_diagonal_(-2.0)
    w = torch.zeros_like(sim)
    top, idx = sim.topk(k, dim=-1)
    w.scatter_(1, idx, top.clamp_min(0) ** 3)
    w = w + w.T  # symmetric: A + A^T, so a pair that chose each other counts twice
    d = w.sum(1).rsqrt()
    s = d[:, None] * w * d[None, :]
    seeds = torch.zeros(len(x), num_classes)
    seeds[torch.arange(labeled), y[:labeled]] = 1.0
    f = torch.linalg.solve(torch.eye(len(x)) - alpha * s, seeds)[labeled:]
    return f / f.sum(-1, keepdim=True)


def test_propagation_reaches_the_closed_form_at_the_alpha_it_is_given():
    x, y = clusters(12, seed=3)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(4)) * 1.5  # overlapping clusters: alpha matters
    order = torch.cat([torch.tensor([0, 12, 24]), torch.tensor([i for i in range(36) if i not in (0, 12, 24)])])
    x, y = x[order], y[order]
    for alpha in (0.5, 0.9):
        expected = closed_form(x, y, 3, 3, k=4, alpha=alpha)
        got = propagate(x[:3], y[:3], x[3:], num_classes=3, k=4, alpha=alpha)
        torch.testing.assert_close(got.probs, expected, atol=0.02, rtol=0)  # 50 iterations: within alpha**50 of the fixed point
    near, far = (closed_form(x, y, 3, 3, k=4, alpha=a) for a in (0.5, 0.9))
    assert (near - far).abs().max() > 0.05  # the two alphas give different labels' spread
