"""Heads fitted on propagated labels: --pseudo-head-share (the teacher's) and
--student-pseudo-head-share (each student's, on its own embeddings), and --graph-alpha
reaching label propagation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_offline import DEFAULTS  # noqa: E402
from test_train import tiny_args  # noqa: E402

import nanonet.train.propagation as propagation  # noqa: E402
import nanonet.train.trainer as trainer  # noqa: E402
from nanonet.train import train  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def spy(monkeypatch) -> dict[str, list]:
    """What every head fit received (its rows' labels and its embeddings' shape), the graph
    targets label propagation made, and the alpha it ran with."""
    seen: dict[str, list] = {"fits": [], "targets": [], "alpha": []}
    real_fit, real_from, real_propagate = trainer.fit_head, trainer.propagate_from, propagation.propagate

    def fit(model, embeddings, labels, *args, **kwargs):
        seen["fits"].append((labels.tolist(), tuple(embeddings.shape), model))
        return real_fit(model, embeddings, labels, *args, **kwargs)

    def propagate_from(*args, **kwargs):
        made = real_from(*args, **kwargs)
        seen["targets"].append(made[0])
        return made

    def propagate(*args, alpha=0.99, **kwargs):
        seen["alpha"].append(alpha)
        return real_propagate(*args, alpha=alpha, **kwargs)

    monkeypatch.setattr(trainer, "fit_head", fit)
    monkeypatch.setattr(trainer, "propagate_from", propagate_from)
    monkeypatch.setattr(propagation, "propagate", propagate)
    return seen


def test_each_students_head_is_fitted_on_its_labels_and_every_propagated_label(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    seen = spy(monkeypatch)
    args = tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **DEFAULTS, student_pseudo_head_share=1.0, graph_alpha=0.5)
    report = train(args, progress=False)
    targets = seen["targets"][0]
    reached = (targets.weights > 0).nonzero().squeeze(-1)
    labeled = report["data"]["labeled"]
    fits = [f for f in seen["fits"] if len(f[0]) > labeled]  # the fits that took pseudo-labels
    models = [model for _, _, model in fits]
    assert len(fits) == 2 and models[0] is not models[1]  # one per student, on its own model
    assert all(m.config.num_layers == 3 for m in models)  # the students, not the 6-layer teacher
    for labels, shape, model in fits:
        # its own training labels first, then every text the graph reached, labeled as the graph's argmax
        assert labels[labeled:] == targets.probs.argmax(-1)[reached].tolist()
        assert shape == (labeled + len(reached), model.config.hidden_size)
    assert report["data"]["propagation"]["student_pseudo_head_labels"] == len(reached) > 0
    assert seen["alpha"] == [0.5]  # --graph-alpha reached label propagation


def test_without_the_share_the_students_heads_keep_to_the_labels(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    seen = spy(monkeypatch)
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **DEFAULTS), progress=False)
    assert all(len(labels) <= report["data"]["labeled"] + report["data"]["dev"] for labels, _, _ in seen["fits"])
    assert "student_pseudo_head_labels" not in report["data"]["propagation"]
    assert seen["alpha"] == [report["settings"]["graph_alpha"]]


def test_without_propagation_or_with_random_heads_no_head_takes_pseudo_labels(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    from nanonet.runtimes.errors import NanonetError

    seen = spy(monkeypatch)
    shares = dict(pseudo_head_share=1.0, student_pseudo_head_share=1.0)
    off = dict(graph_weight=0.0, student_graph_weight=0.0)
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **DEFAULTS, **off, **shares), progress=False)
    assert all(len(labels) <= report["data"]["labeled"] + report["data"]["dev"] for labels, _, _ in seen["fits"])
    assert report["data"]["propagation"] is None  # nothing to take pseudo-labels from
    seen["fits"].clear()
    report = train(tiny_args(tiny_data, tmp_path / "r2", tiny_bert_dir, **{**DEFAULTS, "fit_heads": False}, **shares), progress=False)
    assert seen["fits"] == [] and "student_pseudo_head_labels" not in report["data"]["propagation"]
    with pytest.raises(NanonetError, match="--student-pseudo-head-share: must be in"):
        train(tiny_args(tiny_data, tmp_path / "r3", tiny_bert_dir, student_pseudo_head_share=1.5), progress=False)
    with pytest.raises(NanonetError, match="--graph-alpha: must be in"):
        train(tiny_args(tiny_data, tmp_path / "r4", tiny_bert_dir, graph_alpha=1.0), progress=False)


def test_with_teacher_targets_each_students_head_takes_the_teachers_prediction_for_every_text(
    tiny_data, tiny_bert_dir, tmp_path, monkeypatch
):
    from nanonet.data.tokens import tokenize
    from nanonet.model.checkpoint import load_checkpoint
    from nanonet.model.hf import load_pretrained
    from nanonet.runtimes.errors import NanonetError
    from nanonet.train.evaluate import logits

    seen = spy(monkeypatch)
    shares = dict(pseudo_head_share=0.5, student_pseudo_head_share=0.5)  # the share would keep half; these targets take all
    args = tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **DEFAULTS, **shares, student_head_targets="teacher")
    report = train(args, progress=False)
    # the saved teacher's own predictions on the pool, computed apart
    teacher = load_checkpoint(tmp_path / "run" / "teacher").model
    splits, _ = trainer.draw_splits(args)
    pool = tokenize(splits.unlabeled_texts, load_pretrained(str(tiny_bert_dir)).tokenizer_file, teacher.config.max_length)
    predicted = logits(teacher, pool, 64, torch.device("cpu")).argmax(-1).tolist()
    labeled = report["data"]["labeled"]
    fits = [f for f in seen["fits"] if f[2].config.num_layers == 3 and len(f[0]) > labeled]
    assert len(fits) == 2 and len(predicted) > 0
    for labels, _, _ in fits:
        assert labels[labeled:] == predicted
    assert report["data"]["propagation"]["student_pseudo_head_labels"] == len(predicted)
    with pytest.raises(NanonetError, match="--student-head-targets: must be graph or teacher"):
        train(tiny_args(tiny_data, tmp_path / "r2", tiny_bert_dir, student_head_targets="probs"), progress=False)
