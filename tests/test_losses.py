"""Each loss term is zero when it should be and non-zero when it should not."""

from __future__ import annotations

import pytest
import torch

from nanonet.train import losses


def test_supervised():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    assert losses.supervised(logits, torch.tensor([0, 1])) < 1e-3
    assert losses.supervised(logits, torch.tensor([1, 0])) > 5


def test_distillation():
    a = torch.randn(4, 3)
    assert losses.distillation(a, a.clone(), 2.0).abs() < 1e-6
    assert losses.distillation(a, a + 10.0, 2.0).abs() < 1e-5  # a shift of all logits is the same distribution
    assert losses.distillation(a, torch.randn(4, 3) * 3, 2.0) > 1e-3


def test_distillation_does_not_train_the_teacher():
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    losses.distillation(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_mutual(kind):
    a = torch.randn(4, 3, requires_grad=True)
    assert losses.mutual(a, [a.detach().clone()], kind).abs() < 1e-6
    assert losses.mutual(a, [], kind) == 0
    peer = torch.randn(4, 3, requires_grad=True)
    value = losses.mutual(a, [peer], kind)
    assert value > 1e-4
    value.backward()
    assert peer.grad is None  # peers are detached


def test_hidden_distillation():
    x = torch.randn(5, 8)
    identity = torch.nn.Identity()
    assert losses.hidden_distillation(x, x.clone(), identity) == 0
    assert losses.hidden_distillation(x, x + 1, identity) == pytest.approx(1.0)


def test_embedding_distillation_reads_directions_only():
    x = torch.randn(5, 8)
    assert losses.embedding_distillation(x * 3.0, x.clone()).abs() < 1e-6  # the length does not count
    assert losses.embedding_distillation(x, -x) == pytest.approx(2.0)  # opposite: 1 - (-1)
    e = torch.eye(8)
    assert losses.embedding_distillation(e[:4], e[4:]) == pytest.approx(1.0)  # orthogonal
    s, t = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    losses.embedding_distillation(s, t).backward()
    assert s.grad is not None and t.grad is None  # the teacher's embeddings are targets


def test_ramp():
    assert [losses.ramp(s, 100, 0.3) for s in (0, 15, 30, 90)] == [0.0, 0.5, 1.0, 1.0]
    assert losses.ramp(0, 100, 0.0) == 1.0


def test_self_training_uses_only_confident_pseudo_labels():
    confident = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    unsure = torch.tensor([[0.1, 0.0], [0.0, 0.1]])
    agree = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    disagree = torch.tensor([[0.0, 9.0], [9.0, 0.0]])
    assert losses.self_training(agree, confident, 0.9) < 1e-3
    assert losses.self_training(disagree, confident, 0.9) > 5
    assert losses.self_training(disagree, unsure, 0.9) == 0  # nothing confident: no signal
