"""--check-texts: a slice of the pool held out of the steps and the heads' fits, on which
each student's state as it started and its trained state are compared by agreement with
the teacher; the one agreeing more ships."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_offline import DEFAULTS  # noqa: E402
from test_pseudo_heads import spy  # noqa: E402
from test_train import interrupted_then_resumed, same_files, tiny_args  # noqa: E402

import nanonet.train.trainer as trainer  # noqa: E402
from nanonet.model.checkpoint import load_checkpoint  # noqa: E402
from nanonet.runtimes.errors import NanonetError  # noqa: E402
from nanonet.train import train  # noqa: E402
from nanonet.train.evaluate import predict  # noqa: E402

# pseudo-labelled heads, as the CLI's defaults
CHECKED = {
    **DEFAULTS,
    "pseudo_head_share": 1.0,
    "student_pseudo_head_share": 1.0,
    "steps": 24,
    "eval_every": 8,
    "unlabeled_tokens": 2048,  # about 5 batches an epoch: the steps go over the pool several times
    "check_texts": 1000,  # a tenth of the pool
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


@pytest.fixture
def pool_data(tmp_path):
    """A pool of about 600 texts, so that a tenth of it (58) tells a wrecked student from a sound one."""
    from conftest import write_synthetic_data

    return write_synthetic_data(tmp_path / "data", {"train": 200, "dev": 8, "test": 12})


def watch_pool(monkeypatch) -> dict:
    """The run's tokenized data, and every pool row a step's unlabeled batch packed."""
    seen: dict = {"data": None, "drawn": set()}
    real_tokenize, real_packed = trainer.tokenize_splits, trainer.packed_rows

    def tokenize_splits(*args, **kwargs):
        seen["data"] = real_tokenize(*args, **kwargs)
        return seen["data"]

    def packed_rows(tokens, rows):
        if seen["data"] is not None and tokens is seen["data"].unl:
            seen["drawn"].update(int(r) for r in rows)
        return real_packed(tokens, rows)

    monkeypatch.setattr(trainer, "tokenize_splits", tokenize_splits)
    monkeypatch.setattr(trainer, "packed_rows", packed_rows)
    return seen


def agreement(run, rows: list[int], pool) -> float:
    """The saved student's agreement with the saved teacher on the pool `rows`, computed apart."""
    texts = pool.select(rows)
    student = predict(load_checkpoint(run / "student").model, texts, 256, torch.device("cpu"))
    teacher = predict(load_checkpoint(run / "teacher").model, texts, 256, torch.device("cpu"))
    return float((student == teacher).mean())


def test_the_check_texts_are_held_out_of_every_step_and_every_head_fit(pool_data, tiny_bert_dir, tmp_path, monkeypatch):
    pool = watch_pool(monkeypatch)
    heads = spy(monkeypatch)
    report = train(tiny_args(pool_data, tmp_path / "run", tiny_bert_dir, **CHECKED), progress=False)
    size = len(pool["data"].unl)
    never_drawn = sorted(set(range(size)) - pool["drawn"])
    # a tenth of the pool, and exactly the texts no step drew, though the steps went over the pool three times
    assert report["start_check"]["texts"] == size // 10 == len(never_drawn) > 0
    targets = heads["targets"][0]
    reached = [i for i in (targets.weights > 0).nonzero().squeeze(-1).tolist() if i not in never_drawn]
    expected = targets.probs.argmax(-1)[reached].tolist()
    pseudo_fits = [labels for labels, _, _ in heads["fits"] if len(labels) > report["data"]["labeled_seen"]]
    assert len(pseudo_fits) == 3  # the teacher's refit and each student's
    for labels in pseudo_fits:  # its labels, then the graph's label of every reached text but the held-out ones
        assert len(labels) - len(expected) in (report["data"]["labeled"], report["data"]["labeled_seen"])
        assert labels[len(labels) - len(expected) :] == expected
    assert report["data"]["propagation"]["student_pseudo_head_labels"] == len(reached)
    # the report's agreement of the state that shipped, recomputed from the saved checkpoints
    chosen = report["start_check"]["students"][report["chosen_student"]]
    assert agreement(tmp_path / "run", never_drawn, pool["data"].unl) == pytest.approx(chosen[f"agreement_{chosen['kept']}"], abs=1e-4)


def test_a_student_its_steps_spoil_ships_as_it_started(pool_data, tiny_bert_dir, tmp_path):
    # learning rates of 1 wreck every bias and head in a step or two
    spoiled = train(tiny_args(pool_data, tmp_path / "spoiled", tiny_bert_dir, **CHECKED, lr=1.0, head_lr=1.0), progress=False)
    # the same run whose steps change nothing: its students are their starting states
    still = train(tiny_args(pool_data, tmp_path / "still", tiny_bert_dir, **CHECKED, lr=1e-12, head_lr=1e-12), progress=False)
    for record in spoiled["start_check"]["students"]:
        assert record["kept"] == "start" and record["agreement_start"] > record["agreement_trained"]
    assert all(s["best_step"] == 0 for s in spoiled["students"])  # the dev figures are the start's
    assert spoiled["chosen_student"] == still["chosen_student"]
    shipped = load_checkpoint(tmp_path / "spoiled" / "student").model.state_dict()
    unmoved = load_checkpoint(tmp_path / "still" / "student").model.state_dict()
    for name, tensor in unmoved.items():
        torch.testing.assert_close(shipped[name], tensor, rtol=0, atol=1e-6, msg=name)
    # unmoved, the trained state ties its start, and a tie keeps the trained state
    assert [r["kept"] for r in still["start_check"]["students"]] == ["trained", "trained"]


def test_a_student_its_steps_improve_ships_trained(pool_data, tiny_bert_dir, tmp_path):
    # random student heads: the start agrees with the teacher by chance, and 96 fast steps distil it
    faster = {"fit_heads": False, "steps": 96, "head_lr": 0.1, "lr": 0.01}
    args = tiny_args(pool_data, tmp_path / "run", tiny_bert_dir, **{**CHECKED, **faster})
    report = train(args, progress=False)
    for record in report["start_check"]["students"]:
        assert record["kept"] == "trained" and record["agreement_trained"] > record["agreement_start"]
    assert all(s["best_step"] > 0 for s in report["students"])


def test_a_resumed_run_checks_the_same_start(pool_data, tiny_bert_dir, tmp_path):
    # the starting states are rebuilt on resume, before the saved state is loaded over them
    whole, resumed = interrupted_then_resumed(pool_data, tiny_bert_dir, tmp_path, 8, **CHECKED, lr=1.0, head_lr=1.0)
    assert [r["kept"] for r in whole["start_check"]["students"]] == ["start", "start"]
    assert resumed["start_check"] == whole["start_check"]
    assert same_files(tmp_path / "cut", tmp_path / "whole", "student/model.safetensors")


def test_without_check_texts_the_steps_draw_the_whole_pool_and_the_trained_student_ships(pool_data, tiny_bert_dir, tmp_path, monkeypatch):
    pool = watch_pool(monkeypatch)
    report = train(tiny_args(pool_data, tmp_path / "run", tiny_bert_dir, **{**CHECKED, "check_texts": 0}), progress=False)
    assert pool["drawn"] == set(range(len(pool["data"].unl)))
    assert report["start_check"] is None
    with pytest.raises(NanonetError, match="--check-texts: must be >= 0"):
        train(tiny_args(pool_data, tmp_path / "r2", tiny_bert_dir, check_texts=-1), progress=False)
