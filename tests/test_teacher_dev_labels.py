"""--teacher-dev-labels: the teacher's contrastive phase, its head and label propagation's
seeds take the training labels plus the dev labels; the students' heads and labeled
batches keep to the training labels alone, unless --student-dev-labels gives them the dev labels too
(--student-head-dev-labels: their heads alone)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from test_offline import DEFAULTS  # noqa: E402
from test_train import tiny_args  # noqa: E402

import nanonet.train.trainer as trainer  # noqa: E402
from nanonet.train import train  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def spy_on_labels(monkeypatch) -> dict[str, list[list[int]]]:
    """The class ids each of the contrastive phase, head fitting, label propagation and the
    students' labeled batches received, call by call."""
    seen: dict[str, list[list[int]]] = {"contrastive": [], "head": [], "propagation": [], "batches": []}
    real_adapt, real_head, real_propagate, real_inputs = (
        trainer.adapt_teacher,
        trainer.fit_member_head,
        trainer.propagate_from,
        trainer.step_inputs,
    )

    def adapt(teacher, lab, lab_y, *args, **kwargs):
        seen["contrastive"].append(lab_y.tolist())
        assert len(lab) == len(lab_y)
        return real_adapt(teacher, lab, lab_y, *args, **kwargs)

    def head(model, lab, lab_y, *args, **kwargs):
        seen["head"].append(lab_y.tolist())
        return real_head(model, lab, lab_y, *args, **kwargs)

    def propagate(teacher, lab, lab_y, *args, **kwargs):
        seen["propagation"].append(lab_y.tolist())
        return real_propagate(teacher, lab, lab_y, *args, **kwargs)

    def inputs(*args, **kwargs):
        made = real_inputs(*args, **kwargs)
        seen["batches"].append(made[0].labels.tolist())
        return made

    monkeypatch.setattr(trainer, "adapt_teacher", adapt)
    monkeypatch.setattr(trainer, "fit_member_head", head)
    monkeypatch.setattr(trainer, "propagate_from", propagate)
    monkeypatch.setattr(trainer, "step_inputs", inputs)
    return seen


def gold_ids(path, labels: list[str]) -> list[int]:
    return [labels.index(json.loads(line)["label"]) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("on", [False, True])
def test_the_teacher_alone_learns_the_dev_labels(tiny_data, tiny_bert_dir, tmp_path, monkeypatch, on):
    seen = spy_on_labels(monkeypatch)
    # no contrastive steps: the teacher's head is fitted with the students' (fit_heads), one call per member
    report = train(
        tiny_args(
            tiny_data,
            tmp_path / "run",
            tiny_bert_dir,
            **{**DEFAULTS, "contrastive_steps": 0},
            teacher_dev_labels=on,
            student_head_dev_labels=False,
        ),
        progress=False,
    )
    labels = report["data"]["labels"]
    dev = gold_ids(tiny_data / "dev.jsonl", labels)  # dev_per_class covers the whole dev file
    train_labels = seen["head"][1]  # student 0's head: the training labels
    assert len(train_labels) == report["data"]["labeled"] and sorted(train_labels) != sorted(train_labels + dev)
    teacher_expected = train_labels + dev if on else train_labels
    assert seen["head"][0] == teacher_expected  # the teacher's head
    assert all(ids == teacher_expected for ids in seen["propagation"])  # label propagation's seeds
    assert all(ids == train_labels for ids in seen["head"][1:])  # every student's head
    # the labeled batches draw from the training labels only (each class id no more often than there)
    for batch in seen["batches"]:
        assert all(batch.count(c) <= train_labels.count(c) for c in set(batch))
    assert report["settings"]["teacher_dev_labels"] is on


def test_the_contrastive_phase_takes_the_dev_labels(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    seen = spy_on_labels(monkeypatch)
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **DEFAULTS, teacher_dev_labels=True), progress=False)
    dev = gold_ids(tiny_data / "dev.jsonl", report["data"]["labels"])
    students = seen["head"]  # the adapted teacher's head is fitted inside the contrastive phase, not here
    assert len(students) == 2 and students[0] == students[1]
    assert seen["contrastive"] == [students[0] + dev]


def test_the_students_learn_the_dev_labels_when_asked(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    seen = spy_on_labels(monkeypatch)
    args = {**DEFAULTS, "contrastive_steps": 0}
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **args, student_dev_labels=True), progress=False)
    dev = gold_ids(tiny_data / "dev.jsonl", report["data"]["labels"])
    heads = seen["head"]  # the teacher's, then each student's
    train_labels = heads[0][: report["data"]["labeled"]]
    assert all(ids == train_labels + dev for ids in heads[1:])
    # the labeled batches draw from both: some batch holds a class more often than the training labels do
    assert any(batch.count(c) > train_labels.count(c) for batch in seen["batches"] for c in set(batch))
    assert report["settings"]["student_dev_labels"] is True


def test_the_students_heads_alone_start_on_the_dev_labels_when_asked(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    seen = spy_on_labels(monkeypatch)
    args = {**DEFAULTS, "contrastive_steps": 0}
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **args, student_head_dev_labels=True), progress=False)
    dev = gold_ids(tiny_data / "dev.jsonl", report["data"]["labels"])
    heads = seen["head"]  # the teacher's, then each student's
    train_labels = heads[0][: report["data"]["labeled"]]
    assert len(heads) == 3 and all(ids == train_labels + dev for ids in heads[1:])
    # the labeled batches still draw from the training labels only
    assert seen["batches"] and all(batch.count(c) <= train_labels.count(c) for batch in seen["batches"] for c in set(batch))
    assert report["settings"]["student_head_dev_labels"] is True
