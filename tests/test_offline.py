"""Offline distillation: the cached targets are the live teacher's, the finished teacher
gets no gradient, and an offline run draws, reports and resumes like an online one."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import random_sequences  # noqa: E402
from test_train import comparable, interrupted_then_resumed, same_files, tiny_args  # noqa: E402

from nanonet.data.tokens import tokenize  # noqa: E402
from nanonet.model import NanoClassifier, pack_sequences  # noqa: E402
from nanonet.model.checkpoint import load_checkpoint, make_student  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402
from nanonet.train import train  # noqa: E402
from nanonet.train.cohort import Cohort, StepInputs  # noqa: E402
from nanonet.train.evaluate import embed, embed_and_logits, logits  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def test_cached_logits_equal_the_live_teachers(tiny_bert_dir, tiny_data):
    src = load_pretrained(str(tiny_bert_dir))
    teacher = NanoClassifier(src.encoder, 3).train()  # training mode, as in a run: the cache must switch dropout off
    texts = [json.loads(line)["text"] for line in (tiny_data / "train.jsonl").read_text().splitlines()[:20]]
    tokens = tokenize(texts, src.tokenizer_file, src.encoder.config.max_length)
    cached = logits(teacher, tokens, 64, torch.device("cpu"))  # small budget: several batches, in length order
    assert teacher.training  # its mode is restored
    teacher.eval()
    with torch.no_grad():
        for i in (0, 7, 19):  # one text at a time, straight from its token ids
            live = teacher(pack_sequences([tokens.ids[tokens.offsets[i] : tokens.offsets[i + 1]].tolist()]))[0]
            assert torch.allclose(cached[i], live, atol=1e-5), i


def test_one_pass_gives_the_embeddings_and_the_logits_of_two(tiny_bert_dir, tiny_data):
    src = load_pretrained(str(tiny_bert_dir))
    teacher = NanoClassifier(src.encoder, 3).train()
    texts = [json.loads(line)["text"] for line in (tiny_data / "train.jsonl").read_text().splitlines()[:15]]
    tokens = tokenize(texts, src.tokenizer_file, src.encoder.config.max_length)
    cpu = torch.device("cpu")
    emb, out = embed_and_logits(teacher, tokens, 64, cpu)
    assert torch.allclose(emb, embed(teacher, tokens, 64, cpu), atol=1e-6)
    assert torch.allclose(out, logits(teacher, tokens, 64, cpu), atol=1e-6)


def test_offline_without_warmup_scores_the_teacher_once_and_distils_from_step_one(tiny_data, tiny_bert_dir, tmp_path):
    args = tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, distill="offline", teacher_warmup_steps=0, fit_heads=True)
    report = train(args, progress=False)
    assert report["teacher"]["best_step"] == 0  # scored on dev before the first step, never after
    assert report["teacher"]["dev"]["accuracy"] >= 0
    assert report["history"][0]["kd"] > 0 and "teacher_ce" not in report["history"][0]


def _cohort(enc, classes=3):
    return Cohort(
        NanoClassifier(enc, classes),
        [NanoClassifier(make_student(enc, [0, 2, 4]), classes), NanoClassifier(make_student(enc, [1, 3, 5]), classes)],
        temperature=2.0,
        kd_weight=1.0,
        hidden_weight=0.0,
        mutual_loss="mse",
        self_train_weight=1.0,
        graph_weight=1.0,
    )


def test_a_finished_teacher_gets_no_gradient_and_the_students_distil_from_the_cache(tiny_bert_dir):
    enc = load_pretrained(str(tiny_bert_dir)).encoder
    cohort = _cohort(enc)
    labeled = pack_sequences(random_sequences([5, 9, 7]))
    y = torch.tensor([0, 1, 2])
    unl = pack_sequences(random_sequences([12, 20, 6, 8], seed=1))
    probs, weights = torch.full((4, 3), 1 / 3), torch.ones(4)
    cached = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    x = StepInputs(labeled, y, True, unl, [(unl, 0.0), (unl, 0.0)], 0.5, None, probs, weights, cached)
    terms = cohort(x)
    assert not {"teacher_ce", "graph", "self_train"} & set(terms)
    terms["total"].backward()
    assert all(p.grad is None for p in cohort.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cohort.students[0].parameters())
    # the distillation term is against the cache: different cached logits, a different term
    cohort.zero_grad()
    other = cohort(StepInputs(labeled, y, True, unl, [(unl, 0.0), (unl, 0.0)], 0.5, None, probs, weights, -cached))
    assert float(other["kd"].detach()) != pytest.approx(float(terms["kd"].detach()))


def test_the_embedding_term_pulls_each_student_towards_the_cached_embeddings(tiny_bert_dir):
    enc = load_pretrained(str(tiny_bert_dir)).encoder
    cohort = _cohort(enc).eval()  # no dropout: the same inputs give the same terms
    cohort.embedding_weight = 1.0
    labeled, y = pack_sequences(random_sequences([5, 9, 7])), torch.tensor([0, 1, 2])
    unl = pack_sequences(random_sequences([12, 20, 6, 8], seed=1))
    cached = torch.randn(4, 3)
    views = [(unl, 0.0), (unl, 0.0)]
    with torch.no_grad():
        own = [student(unl, return_embedding=True)[1] for student in cohort.students]

    def term(targets):
        x = StepInputs(labeled, y, True, unl, views, 0.0, None, teacher_logits=cached, teacher_embeddings=targets)
        return cohort(x)

    # student 0's own embeddings (at twice their length) as the targets: only student 1 is off them
    first = term(2.0 * own[0])
    only_second = 1 - torch.nn.functional.cosine_similarity(own[1], own[0], dim=-1).mean()
    assert float(only_second) > 1e-3
    assert float(first["embedding"].detach()) == pytest.approx(float(only_second), abs=1e-5)
    first["total"].backward()
    assert all(p.grad is None for p in cohort.teacher.parameters())
    bias = dict(cohort.students[1].named_parameters())["encoder.layers.0.fc1.bias"]
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    cohort.zero_grad()
    assert float(term(None)["embedding"]) == 0  # no cached embeddings: no term
    cohort.embedding_weight = 0.0
    assert float(term(own[0] * -1)["total"].detach()) == pytest.approx(float(term(own[0])["total"].detach()))  # weight 0: off


def test_offline_and_online_runs_draw_and_report_alike(tiny_data, tiny_bert_dir, tmp_path):
    online = train(tiny_args(tiny_data, tmp_path / "on", tiny_bert_dir), progress=False)
    offline = train(tiny_args(tiny_data, tmp_path / "off", tiny_bert_dir, distill="offline"), progress=False)
    assert offline["data"]["labeled_sha256"] == online["data"]["labeled_sha256"]
    assert {k: v for k, v in offline["settings"].items() if k not in ("out", "distill")} == {
        k: v for k, v in online["settings"].items() if k not in ("out", "distill")
    }
    assert offline["settings"]["distill"] == "offline" and online["settings"]["distill"] == "online"
    assert "cache" in offline["training"]["phases"] and "cache" not in online["training"]["phases"]
    # warm-up 2 of 12 steps: from the first evaluation after it the finished teacher is not rescored
    assert all("teacher" not in h["dev"] for h in offline["history"]) and "teacher" in online["history"][0]["dev"]
    assert "teacher_ce" not in offline["history"][-1] and offline["history"][-1]["kd"] > 0


@pytest.mark.parametrize("stop", [6, 10])  # resumed from the state at step 4 (before the cache exists) or at step 8 (after)
def test_offline_resume_is_bitwise_equal(tiny_data, tiny_bert_dir, tmp_path, stop):
    # the cache is made before step 6
    whole, resumed = interrupted_then_resumed(tiny_data, tiny_bert_dir, tmp_path, stop, distill="offline", teacher_warmup_steps=5)
    assert comparable(resumed) == comparable(whole)
    assert same_files(tmp_path / "cut", tmp_path / "whole", "student/model.safetensors")


def test_offline_with_hidden_distillation_is_refused(tiny_data, tiny_bert_dir, tmp_path):
    from nanonet.runtimes.errors import NanonetError

    with pytest.raises(NanonetError, match="--distill: offline caches the teacher's logits"):
        train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, distill="offline", hidden_weight=1.0), progress=False)


# the defaults' shape: an adapted teacher, final at once, its logits cached during label
# propagation, students copied from it
DEFAULTS = dict(
    contrastive_steps=4, contrastive_lr=1e-3, fit_heads=True, distill="offline", students_from="adapted", teacher_warmup_steps=0
)


# and with the teacher's head refitted on pseudo-labels, and with every head fitted on them (as the CLI's defaults)
@pytest.mark.parametrize(
    "extra",
    [{}, {"pseudo_head_share": 0.5}, {"pseudo_head_share": 1.0, "student_pseudo_head_share": 1.0}, {"embedding_weight": 1.0}],
)
def test_the_default_shape_trains_and_resumes_bitwise(tiny_data, tiny_bert_dir, tmp_path, monkeypatch, extra):
    def no_second_adaptation(*args, **kwargs):
        raise AssertionError("a resumed run adapted the teacher again instead of loading it")

    def patch() -> None:
        monkeypatch.setattr("nanonet.train.trainer.adapt_teacher", no_second_adaptation)

    whole, resumed = interrupted_then_resumed(tiny_data, tiny_bert_dir, tmp_path, 6, before_resume=patch, **DEFAULTS, **extra)
    assert comparable(resumed) == comparable(whole)
    assert same_files(tmp_path / "cut", tmp_path / "whole", "student/model.safetensors")
    assert (tmp_path / "whole" / "adapted_teacher.safetensors").is_file()
    teacher = load_checkpoint(tmp_path / "whole" / "teacher").model.encoder.state_dict()
    student = load_checkpoint(tmp_path / "whole" / "student").model
    for j, layer in enumerate(student.config.layer_ids):  # adapted students: the adapted teacher's weights
        assert torch.equal(student.encoder.state_dict()[f"layers.{j}.fc1.weight"], teacher[f"layers.{layer}.fc1.weight"])


def test_a_head_refitted_on_pseudo_labels_is_what_teaches(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    import nanonet.train.trainer as trainer

    taught = {}
    finish = trainer.finish_teacher

    def record(*args, **kwargs):
        out = finish(*args, **kwargs)
        taught["logits"] = out[0]
        return out

    monkeypatch.setattr(trainer, "finish_teacher", record)
    plain = train(tiny_args(tiny_data, tmp_path / "plain", tiny_bert_dir, **DEFAULTS), progress=False)
    refit = train(tiny_args(tiny_data, tmp_path / "refit", tiny_bert_dir, pseudo_head_share=0.5, **DEFAULTS), progress=False)
    assert "pseudo_head_labels" not in plain["data"]["propagation"] and refit["data"]["propagation"]["pseudo_head_labels"] > 0
    heads = [load_checkpoint(tmp_path / run / "teacher").model.head.weight for run in ("plain", "refit")]
    assert not torch.allclose(*heads)  # the refit changed the teacher's head
    # the students' cached targets are the saved (refitted) teacher's own logits on the unlabeled pool
    teacher = load_checkpoint(tmp_path / "refit" / "teacher").model
    args = tiny_args(tiny_data, tmp_path / "x", tiny_bert_dir, **DEFAULTS)
    src = load_pretrained(str(tiny_bert_dir))
    splits, _ = trainer.draw_splits(args)
    unlabeled = tokenize(splits.unlabeled_texts, src.tokenizer_file, teacher.config.max_length)
    live = logits(teacher, unlabeled, 64, torch.device("cpu"))
    torch.testing.assert_close(taught["logits"], live, atol=1e-4, rtol=1e-4)


def test_cached_embeddings_are_the_finished_teachers_own(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    import nanonet.train.trainer as trainer

    taught = {}
    finish = trainer.finish_teacher

    def record(*args, **kwargs):
        taught["cache"] = finish(*args, **kwargs)
        return taught["cache"]

    monkeypatch.setattr(trainer, "finish_teacher", record)
    args = tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, embedding_weight=1.0, pseudo_head_share=0.5, **DEFAULTS)
    report = train(args, progress=False)
    assert report["history"][-1]["embedding"] > 0
    teacher = load_checkpoint(tmp_path / "run" / "teacher").model
    src = load_pretrained(str(tiny_bert_dir))
    splits, _ = trainer.draw_splits(args)
    unlabeled = tokenize(splits.unlabeled_texts, src.tokenizer_file, teacher.config.max_length)
    cached_logits, cached_embeddings = taught["cache"]
    torch.testing.assert_close(cached_embeddings, embed(teacher, unlabeled, 64, torch.device("cpu")), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached_logits, logits(teacher, unlabeled, 64, torch.device("cpu")), atol=1e-4, rtol=1e-4)
    plain = train(tiny_args(tiny_data, tmp_path / "plain", tiny_bert_dir, pseudo_head_share=0.5, **DEFAULTS), progress=False)
    assert taught["cache"][1] is None and plain["history"][-1]["embedding"] == 0  # off by default: nothing cached
