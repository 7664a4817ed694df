"""One pass over the pool for the teacher and its students: a student made of the
teacher's first layers picks up the teacher's hidden states where their layers part,
and its embeddings are those it computes on its own."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from nanonet.data.tokens import budget_batches, tokenize  # noqa: E402
from nanonet.model import NanoClassifier  # noqa: E402
from nanonet.model.checkpoint import make_student  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402
from nanonet.train.evaluate import embed, embed_with_branches, logits, shared_layers  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def _setup(tiny_bert_dir, tiny_data):
    src = load_pretrained(str(tiny_bert_dir))
    teacher = NanoClassifier(src.encoder, 3).train()
    texts = [json.loads(line)["text"] for line in (tiny_data / "train.jsonl").read_text().splitlines()[:24]]
    tokens = tokenize(texts, src.tokenizer_file, src.encoder.config.max_length)
    return src, teacher, tokens


def _students(src) -> dict[str, tuple[NanoClassifier, int]]:
    """Students and how many of the teacher's leading layers each computes the same way."""
    enc = src.encoder

    def student(layers, **attention):
        return NanoClassifier(make_student(enc, layers, **attention), 3)

    trained = student([0, 1, 5])
    with torch.no_grad():
        trained.encoder.layers[1].fc2.bias.add_(0.1)  # its second layer has moved away from the teacher's
    other_embeddings = student([0, 1, 5])
    with torch.no_grad():
        other_embeddings.encoder.embeddings.word.weight.mul_(1.1)
    return {
        "bottom two and the top": (student([0, 1, 5]), 2),
        "every other, even": (student([0, 2, 4]), 1),
        "every other, odd": (student([1, 3, 5]), 0),
        "second layer attends locally": (student([0, 1, 5], global_every=2, local_window=4), 1),
        "second layer trained": (trained, 1),
        "own token embeddings": (other_embeddings, -1),
    }


def test_each_branch_embeds_as_it_would_alone(tiny_bert_dir, tiny_data):
    src, teacher, tokens = _setup(tiny_bert_dir, tiny_data)
    students = _students(src)
    models = [m for m, _ in students.values()]
    for name, (model, shared) in students.items():
        assert shared_layers(teacher, model) == shared, name
    emb, out, branch = embed_with_branches(teacher, models, tokens, 64, CPU)  # several batches
    assert teacher.training and all(m.training for m in models)  # modes restored
    torch.testing.assert_close(emb, embed(teacher, tokens, 64, CPU), rtol=0, atol=1e-6)
    torch.testing.assert_close(out, logits(teacher, tokens, 64, CPU), rtol=0, atol=1e-6)
    for name, model, got in zip(students, models, branch):
        want = embed(model, tokens, 64, CPU)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=name)
        assert not torch.allclose(got, emb, atol=1e-3), name  # a student's own embedding, not the teacher's


def test_a_student_of_the_first_layers_runs_only_the_layers_it_does_not_share(tiny_bert_dir, tiny_data):
    src, teacher, tokens = _setup(tiny_bert_dir, tiny_data)
    student = NanoClassifier(make_student(src.encoder, [0, 1, 5]), 3)
    calls = [0, 0, 0]
    for i, layer in enumerate(student.encoder.layers):
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    batches = len(list(budget_batches(tokens.lengths, 64, rng=None)))
    embed_with_branches(teacher, [student], tokens, 64, CPU)
    assert calls == [0, 0, batches] and batches > 1
