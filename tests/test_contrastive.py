"""The teacher's contrastive adaptation: the loss against its definition written out, the
head fit, what the phase changes (the teacher) and what it leaves alone (the students)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from test_train import comparable, interrupted_then_resumed, same_files, tiny_args  # noqa: E402

from nanonet.model.checkpoint import load_checkpoint  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402
from nanonet.train import train  # noqa: E402
from nanonet.train.contrastive import supervised_contrastive  # noqa: E402
from nanonet.train.heads import fit_head, fit_member_head  # noqa: E402
from nanonet.train.trainer import soup  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def loop_supcon(z: torch.Tensor, y: list[int], t: float) -> float:
    """Khosla et al.'s L_out, one anchor and one positive at a time."""
    z = torch.nn.functional.normalize(z, dim=-1)
    per_anchor = []
    for i in range(len(y)):
        others = [a for a in range(len(y)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in others)
        per_anchor.append(sum(-math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in positives) / len(positives))
    return sum(per_anchor) / len(per_anchor)


def test_supervised_contrastive_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g)
    y = [0, 1, 0, 2, 1, 0, 3]  # classes 2 and 3 have no positive: those anchors do not count
    got = supervised_contrastive(z, torch.tensor(y), 0.1)
    assert float(got) == pytest.approx(loop_supcon(z, y, 0.1), rel=1e-5)
    # pulling a class together lowers it
    tight = z.clone()
    tight[[2, 5]] = z[0] + 0.01 * torch.randn(2, 5, generator=g)
    assert float(supervised_contrastive(tight, torch.tensor(y), 0.1)) < float(got)


def test_supervised_contrastive_without_positives_is_zero_and_differentiable():
    z = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive(z, torch.tensor([0, 1, 2]), 0.1)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) == 0.0


def test_fit_head_separates_separable_classes(tiny_bert_dir):
    from nanonet.model import NanoClassifier

    model = NanoClassifier(load_pretrained(str(tiny_bert_dir)).encoder, 3)
    hidden = model.config.hidden_size
    g = torch.Generator().manual_seed(1)
    centres = 3 * torch.randn(3, hidden, generator=g)
    y = torch.arange(3).repeat(10)
    x = centres[y] + 0.3 * torch.randn(30, hidden, generator=g)
    fit_head(model, x, y, 3)
    with torch.no_grad():
        assert (model.head(x).argmax(-1) == y).all()
        fresh = x[:3] * 0 + centres  # the class centres themselves
        assert model.head(fresh).argmax(-1).tolist() == [0, 1, 2]


def test_the_phase_adapts_the_teacher_and_leaves_the_students_pretrained(tiny_data, tiny_bert_dir, tmp_path):
    pretrained = load_pretrained(str(tiny_bert_dir)).encoder.state_dict()
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, contrastive_steps=8, contrastive_lr=1e-3), progress=False)
    c = report["contrastive"]
    assert c["steps"] == 8 and c["loss_last"] < c["loss_first"]  # the loss went down on the labels
    teacher = load_checkpoint(tmp_path / "run" / "teacher").model.encoder.state_dict()
    weight = "layers.0.fc1.weight"
    assert not torch.equal(teacher[weight], pretrained[weight])  # a weight, not a bias: all parameters adapted
    student = load_checkpoint(tmp_path / "run" / "student").model
    source = student.config.layer_ids
    for j, layer in enumerate(source):
        # students train bias terms only, from the pretrained layers, never from the adapted teacher's
        assert torch.equal(student.encoder.state_dict()[f"layers.{j}.fc1.weight"], pretrained[f"layers.{layer}.fc1.weight"])
    assert report["training"]["phases"]["contrastive"] > 0


def test_resume_with_the_contrastive_phase_is_bitwise_equal(tiny_data, tiny_bert_dir, tmp_path):
    whole, resumed = interrupted_then_resumed(tiny_data, tiny_bert_dir, tmp_path, 6, contrastive_steps=6, contrastive_lr=1e-3)
    assert comparable(resumed) == comparable(whole)
    assert same_files(tmp_path / "cut", tmp_path / "whole", "student/model.safetensors", "teacher/model.safetensors")


def _tiny_phase(tiny_bert_dir, labels: list[int]):
    """A tiny teacher and a labeled set of one short text per label."""
    import numpy as np

    from nanonet.data.tokens import Tokenized
    from nanonet.model import NanoClassifier

    teacher = NanoClassifier(load_pretrained(str(tiny_bert_dir)).encoder, max(labels) + 1)
    ids = np.array([[2, 5 + i, 6 + i, 3] for i in range(len(labels))], np.int32).ravel()
    lab = Tokenized(ids, np.arange(0, 4 * len(labels) + 1, 4, dtype=np.int64))
    return teacher, lab, torch.tensor(labels)


def _adapt(teacher, lab, y, steps: int):
    from nanonet.train.contrastive import adapt_teacher

    return adapt_teacher(teacher, lab, y, int(y.max()) + 1, steps, 1e-3, 0.1, 4096, 4096, 0, torch.device("cpu"))


def test_steps_without_a_pair_leave_the_teacher_as_it_was_and_warn_of_nothing(tiny_bert_dir):
    import warnings

    teacher, lab, y = _tiny_phase(tiny_bert_dir, [0, 1, 2, 3])  # one text per class: no batch holds a pair
    before = {k: v.clone() for k, v in teacher.encoder.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "lr_scheduler.step() before optimizer.step()"
        summary = _adapt(teacher, lab, y, steps=5)
    assert summary["skipped_without_pairs"] == 5
    assert all(torch.equal(before[k], v) for k, v in teacher.encoder.state_dict().items())


def test_the_learning_rate_warms_up_over_a_tenth_of_the_steps_then_decays_to_zero(tiny_bert_dir, monkeypatch):
    used = []
    step = torch.optim.AdamW.step

    def recording(self, *a, **k):
        used.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    teacher, lab, y = _tiny_phase(tiny_bert_dir, [0, 0, 1, 1])
    _adapt(teacher, lab, y, steps=20)
    # 20 steps: 2 of warm-up (half, then all of 1e-3), then down by 1/18 a step from 18/18
    expected = [0.5e-3, 1e-3] + [1e-3 * (18 - j) / 18 for j in range(18)]
    assert used == pytest.approx(expected)


def test_the_floor_is_log_of_each_rows_partners_and_collapsed_classes_reach_it():
    from nanonet.train.contrastive import contrastive_floor

    y = [0, 0, 1, 1, 1, 2]  # class 2 has no partner and is left out
    assert contrastive_floor(torch.tensor(y)) == pytest.approx((0 + 0 + 3 * math.log(2)) / 5)
    # every class collapsed to its own orthogonal point, the others far: L_out -> the floor
    collapsed = torch.eye(3)[torch.tensor(y)]
    assert loop_supcon(collapsed, y, 0.01) == pytest.approx(contrastive_floor(torch.tensor(y)), abs=1e-6)
    spread = collapsed + 0.3 * torch.randn(len(y), 3, generator=torch.Generator().manual_seed(0))
    assert loop_supcon(spread, y, 0.01) > contrastive_floor(torch.tensor(y)) + 0.1
    assert contrastive_floor(torch.tensor([0, 1, 2])) == 0.0


def test_the_steps_end_once_the_loss_is_within_the_gap_of_its_floor(tiny_bert_dir):
    from nanonet.train.contrastive import adapt_teacher

    def run(gap: float) -> dict:
        teacher, lab, y = _tiny_phase(tiny_bert_dir, [0, 0, 1, 1])
        return adapt_teacher(teacher, lab, y, 2, 6, 1e-3, 0.1, 4096, 4096, 0, torch.device("cpu"), stop_gap=gap)

    assert run(0.0)["steps_run"] == 6  # off: every step
    assert run(1e-9)["steps_run"] == 6  # a random tiny teacher is nowhere near collapsed classes
    assert run(100.0)["steps_run"] == 1  # any loss is within 100 of the floor: the first step ends it


def test_a_soup_is_the_mean_of_its_ingredients_with_a_head_fitted_on_it(tiny_bert_dir):
    teacher, lab, y = _tiny_phase(tiny_bert_dir, [0, 0, 1, 1, 2, 2])
    g = torch.Generator().manual_seed(0)
    first = teacher.encoder.state_dict()
    ingredients = [{k: v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in first.items()} for _ in range(2)]
    summaries = [{"steps_run": 3, "loss_last": 1.0, "seconds": 1.0}, {"steps_run": 5, "loss_last": 0.5, "seconds": 2.0}]
    data = SimpleNamespace(teacher_lab=lab, teacher_lab_y=y, num_classes=3)
    args = SimpleNamespace(eval_tokens=4096)
    summary = soup(teacher, ingredients, summaries, data, args, SimpleNamespace(device=torch.device("cpu")))
    weight = "layers.2.fc1.weight"
    got = teacher.encoder.state_dict()[weight]
    assert torch.allclose(got, 0.5 * (ingredients[0][weight] + ingredients[1][weight]))
    assert not torch.allclose(got, ingredients[0][weight])
    assert summary["soup"] == 2 and summary["steps_run"] == 8 and summary["loss_last"] == [1.0, 0.5]
    fresh = type(teacher)(teacher.encoder, 3, teacher.pooling)  # the head fitted on the mean's embeddings, not an ingredient's
    fit_member_head(fresh, lab, y, 3, 4096, torch.device("cpu"))
    assert torch.allclose(teacher.head.weight, fresh.head.weight, atol=1e-5)


def test_a_run_with_a_soup_adapts_twice_and_resumes_bitwise(tiny_data, tiny_bert_dir, tmp_path):
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, contrastive_steps=3, contrastive_soup=2), progress=False)
    c = report["contrastive"]
    assert c["soup"] == 2 and c["steps_run"] == 6 and len(c["loss_last"]) == 2
    assert c["loss_last"][0] != c["loss_last"][1]  # other dropout draws: two different ingredients
    whole, resumed = interrupted_then_resumed(tiny_data, tiny_bert_dir, tmp_path, 6, contrastive_steps=3, contrastive_soup=2)
    assert comparable(resumed) == comparable(whole)
