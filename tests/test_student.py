"""Students built by layer selection hold exactly the selected layers' weights."""

from __future__ import annotations

import pytest
import torch
from conftest import random_sequences

from nanonet.model import load_pretrained, make_student, pack_sequences
from nanonet.runtimes.errors import NanonetError


def test_student_0_2_4_holds_exactly_those_layers(tiny_bert_dir):
    teacher = load_pretrained(str(tiny_bert_dir)).encoder
    student = make_student(teacher, [0, 2, 4])
    assert student.config.layer_ids == [0, 2, 4] and student.config.num_layers == 3
    t, s = teacher.state_dict(), student.state_dict()
    for name, tensor in s.items():
        if name.startswith("layers."):
            _, j, rest = name.split(".", 2)
            source = f"layers.{[0, 2, 4][int(j)]}.{rest}"
        else:
            source = name
        assert torch.equal(tensor, t[source]), name
        assert tensor.data_ptr() != t[source].data_ptr()  # a copy: training the student leaves the teacher alone
    # layers 1, 3, 5 are not in the student
    for j in range(3):
        for skipped in (1, 3, 5):
            assert not torch.equal(s[f"layers.{j}.fc1.weight"], t[f"layers.{skipped}.fc1.weight"])


def test_student_equals_teacher_run_on_the_selected_layers(tiny_bert_dir):
    teacher = load_pretrained(str(tiny_bert_dir)).encoder
    student = make_student(teacher, [1, 3, 5])
    batch = pack_sequences(random_sequences([9, 4, 15]))
    with torch.no_grad():
        x = teacher.embeddings(batch)
        for i in (1, 3, 5):
            x = teacher.layers[i](x, batch, "sdpa")
        torch.testing.assert_close(student(batch), x, atol=0, rtol=0)


def test_modernbert_student_keeps_layer_types_and_layer0_identity_norm(tiny_modernbert_dir):
    teacher = load_pretrained(str(tiny_modernbert_dir)).encoder  # types: g l l g l l
    even, odd = make_student(teacher, [0, 2, 4]), make_student(teacher, [1, 3, 5])
    assert even.config.layer_types == ["global", "local", "local"]
    assert odd.config.layer_types == ["local", "global", "local"]
    assert isinstance(even.layers[0].attn_norm, torch.nn.Identity)
    assert isinstance(odd.layers[0].attn_norm, torch.nn.LayerNorm)
    assert odd.layers[1].attn.rope_theta == teacher.config.rope_theta_global
    realternated = make_student(teacher, [1, 3, 5], global_every=2)
    assert realternated.config.layer_types == ["global", "local", "global"]


@pytest.mark.parametrize("layers,message", [([0, 9], "out of range"), ([2, 2], "twice"), ([], "at least one")])
def test_bad_layer_selection_is_a_clear_error(tiny_bert_dir, layers, message):
    teacher = load_pretrained(str(tiny_bert_dir)).encoder
    with pytest.raises(NanonetError, match=message):
        make_student(teacher, layers)
