"""NanoNet training end to end on a tiny random teacher and a tiny synthetic data set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanonet.model import load_checkpoint, load_pretrained, make_student
from nanonet.runtimes.errors import NanonetError
from nanonet.train import TrainArgs, train
from nanonet.train.cohort import Cohort, StepInputs
from nanonet.train.views import cutoff

TIMING = ("seconds", "tokens_per_second")


def tiny_args(data: Path, out: Path, teacher: Path, **overrides) -> TrainArgs:
    settings = dict(
        data=str(data),
        out=str(out),
        teacher=str(teacher),
        labels_per_class=4,
        dev_per_class=8,  # all of the dev file
        contrastive_steps=0,  # the contrastive phase and fitted heads have tests of their own
        fit_heads=False,
        pseudo_head_share=0.0,  # heads fitted on propagated labels: tests/test_pseudo_heads.py
        student_pseudo_head_share=0.0,
        distill="online",  # the cohort as these tests measured it; offline distillation has tests of its own
        students_from="pretrained",
        students=2,  # a cohort: mutual learning and the choice between students have tests here
        seed=3,
        steps=12,
        eval_every=4,
        teacher_warmup_steps=2,
        labeled_tokens=128,
        unlabeled_tokens=256,
        threads=1,
    )
    settings.update(overrides)
    return TrainArgs(**settings)


def comparable(report: dict) -> dict:
    """The report minus wall-clock and memory figures."""
    report = json.loads(json.dumps(report))
    for key in TIMING:
        report["training"].pop(key)
    for key in ("phases", "peak_rss_mb"):
        report["training"].pop(key, None)
    if report.get("contrastive"):
        report["contrastive"].pop("seconds")
    for record in report["history"]:
        record.pop("rss_mb", None)
    if report["data"].get("propagation"):
        report["data"]["propagation"].pop("seconds")
        for refresh in report["data"]["propagation"]["refreshes"]:
            refresh.pop("seconds")
    return report


def interrupted_then_resumed(data: Path, teacher: Path, tmp: Path, stop: int, before_resume=None, **settings) -> tuple[dict, dict]:
    """A run straight through (tmp/whole) and one stopped after step `stop` and resumed
    (tmp/cut), both with `settings`; returns their reports, settings paths removed.
    `before_resume` runs between the stop and the resumption (to patch something)."""

    def interrupt(step: int) -> None:
        if step == stop:
            raise KeyboardInterrupt

    whole = train(tiny_args(data, tmp / "whole", teacher, **settings), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_args(data, tmp / "cut", teacher, **settings), progress=False, on_step=interrupt)
    if before_resume:
        before_resume()
    resumed = train(tiny_args(data, tmp / "cut", teacher, resume=True, **settings), progress=False)
    for r in (whole, resumed):
        r["settings"].pop("out")
        r["settings"].pop("resume")
    return whole, resumed


def same_files(a: Path, b: Path, *names: str) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def test_bias_only_changes_only_biases_and_heads(tiny_data, tiny_bert_dir, tmp_path):
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir), progress=False)
    teacher = load_pretrained(str(tiny_bert_dir)).encoder
    chosen = report["students"][report["chosen_student"]]
    before = make_student(teacher, chosen["layers"]).state_dict()
    after = load_checkpoint(tmp_path / "run" / "student").model.encoder.state_dict()
    changed_bias = 0
    for name, tensor in before.items():
        if name.endswith(".bias"):
            changed_bias += int(not torch.equal(tensor, after[name]))
        else:
            assert torch.equal(tensor, after[name]), f"{name} changed under --trainable bias"
    assert changed_bias > 0
    # the report counts what trained
    bias_count = sum(t.numel() for n, t in before.items() if n.endswith(".bias"))
    head = 32 * 3 + 3
    assert chosen["trainable_parameters"] == bias_count + head
    assert report["teacher"]["trainable_parameters"] < report["teacher"]["parameters"]


def test_all_trains_weights_too(tiny_data, tiny_bert_dir, tmp_path):
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, trainable="all", steps=4), progress=False)
    s = report["students"][0]
    assert s["trainable_parameters"] == s["parameters"]


def test_teacher_can_train_everything_while_students_train_biases(tiny_data, tiny_bert_dir, tmp_path):
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, teacher_trainable="all", steps=4), progress=False)
    assert report["teacher"]["trainable_parameters"] == report["teacher"]["parameters"]
    assert all(s["trainable_parameters"] < s["parameters"] for s in report["students"])
    before = load_pretrained(str(tiny_bert_dir)).encoder.state_dict()
    after = load_checkpoint(tmp_path / "run" / "teacher").model.encoder.state_dict()
    assert not torch.equal(before["layers.0.attn.qkv.weight"], after["layers.0.attn.qkv.weight"])


def test_supervised_only_run_uses_no_unlabeled_text(tiny_data, tiny_bert_dir, tmp_path):
    args = tiny_args(
        tiny_data,
        tmp_path / "run",
        tiny_bert_dir,
        kd_weight=0.0,
        mutual_weight=0.0,
        self_train_weight=0.0,
        graph_weight=0.0,
        student_graph_weight=0.0,
        students=1,
        steps=None,
        epochs=3,
    )
    report = train(args, progress=False)
    t = report["training"]
    assert t["tokens"] <= t["steps"] * args.labeled_tokens  # an unlabeled batch would add up to 256 a step
    assert "kd" not in report["history"][-1] and report["history"][-1]["student_ce"] > 0


def test_same_seed_same_report(tiny_data, tiny_bert_dir, tmp_path):
    a = train(tiny_args(tiny_data, tmp_path / "a", tiny_bert_dir), progress=False)
    b = train(tiny_args(tiny_data, tmp_path / "b", tiny_bert_dir), progress=False)
    for r in (a, b):
        r["settings"].pop("out")
    assert comparable(a) == comparable(b)
    assert (tmp_path / "a/student/model.safetensors").read_bytes() == (tmp_path / "b/student/model.safetensors").read_bytes()
    c = train(tiny_args(tiny_data, tmp_path / "c", tiny_bert_dir, seed=4), progress=False)
    assert c["data"]["labeled_sha256"] != a["data"]["labeled_sha256"]


def _accuracy_of_checkpoint(ckpt_dir: Path, data_file: Path) -> float:
    """The checkpoint's accuracy on a labeled file, computed here: the tokenizer it ships,
    one packed batch in eval mode, argmax against the file's label names."""
    from tokenizers import Tokenizer

    from nanonet.model import pack_sequences

    ckpt = load_checkpoint(ckpt_dir)
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    tok = Tokenizer.from_file(str(ckpt_dir / "tokenizer.json"))
    with torch.no_grad():
        logits = ckpt.model.eval()(pack_sequences([e.ids for e in tok.encode_batch([r["text"] for r in rows])]))
    return sum(ckpt.labels[p] == r["label"] for p, r in zip(logits.argmax(-1).tolist(), rows)) / len(rows)


# Long and fast enough for this tiny random teacher to learn the synthetic classes: measured
# test accuracy 0.81 (teacher) and 0.67 (both students) on 36 texts, chance 1/3; the two
# students tie on dev (16 of 24 each) and teacher agreement (0.667 vs 0.713) picks student 1.
LEARNING = dict(trainable="all", teacher_trainable="all", lr=1e-2, teacher_lr=1e-2, head_lr=0.1, steps=40, eval_every=10)


def test_report_contents(tiny_data, tiny_bert_dir, tmp_path):
    # the teacher kept to the training labels, the tiny model's own attention dropout and labels
    # spread as far as alpha 0.99: this run's two students then tie on dev, so the tie-break runs
    args = tiny_args(
        tiny_data,
        tmp_path / "run",
        tiny_bert_dir,
        **LEARNING,
        teacher_dev_labels=False,
        attention_dropout=None,
        graph_alpha=0.99,
        student_layers=[[0, 2, 4], [1, 3, 5]],
    )
    report = train(args, progress=False)
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == report
    assert [s["layers"] for s in report["students"]] == [[0, 2, 4], [1, 3, 5]]
    assert [s["view"] for s in report["students"]] == ["cutoff", "noise"]
    for member in (report["teacher"], *report["students"]):
        assert member["test"]["n"] == 36
    assert report["data"]["labeled"] == 12 and report["data"]["dev_source"] == "dev"
    assert 0 < report["training"]["padding_avoided"] < 1
    assert report["settings"]["labels_per_class"] == 4 and report["settings"]["seed"] == 3
    assert report["settings"]["eval_tokens"] == 4096  # the CPU default, resolved: what the run used, not "default"
    assert [h["step"] for h in report["history"]] == [10, 20, 30, 40]
    assert report["history"][0]["kd"] > 0 and report["history"][0]["mutual"] > 0 and report["history"][0]["graph"] > 0
    assert report["data"]["propagation"]["texts"] == report["data"]["unlabeled"]
    assert 0 < report["data"]["propagation"]["mean_certainty"] <= 1
    chosen = report["students"][report["chosen_student"]]
    ckpt = load_checkpoint(tmp_path / "run" / "student")
    assert ckpt.labels == ["alpha", "beta", "gamma"] and ckpt.model.config.layer_ids == chosen["layers"]
    # the reported accuracies are the saved checkpoints' own, recomputed here on the files;
    # and they learned: well above chance (1/3), which a run that trains nothing stays at
    for member, ckpt_dir in ((report["teacher"], tmp_path / "run" / "teacher"), (chosen, tmp_path / "run" / "student")):
        assert member["test"]["accuracy"] == pytest.approx(_accuracy_of_checkpoint(ckpt_dir, tiny_data / "test.jsonl"), abs=1e-9)
        assert member["dev"]["accuracy"] == pytest.approx(_accuracy_of_checkpoint(ckpt_dir, tiny_data / "dev.jsonl"), abs=1e-9)
        assert member["test"]["accuracy"] >= 0.5, member
    # the choice, by the rule written out here: students within one standard error of the best
    # dev accuracy, and at least one dev example (24 here), are tied; among tied students the
    # one agreeing most with the teacher ships (then dev accuracy, macro-F1, lower index)
    dev = [s["dev"]["accuracy"] for s in report["students"]]
    best = max(dev)
    margin = max(1 / 24, (best * (1 - best) / 24) ** 0.5)
    tied = [i for i, a in enumerate(dev) if a >= best - margin - 1e-9]
    selection = report["selection"]
    assert selection["dev_tolerance"] == pytest.approx(margin, abs=1e-4) and selection["tied_on_dev"] == tied
    assert len(tied) == 2 and selection["teacher_agreement"] is not None  # this run exercises the tie-break
    agreement = {int(k): v for k, v in selection["teacher_agreement"].items()}
    expected = max(tied, key=lambda i: (agreement[i], dev[i], report["students"][i]["dev"]["macro_f1"], -i))
    assert report["chosen_student"] == expected == 1  # measured: the agreement, not the index, decides


def test_resume_continues_where_it_stopped_and_loses_nothing(tiny_data, tiny_bert_dir, tmp_path):
    # label propagation reruns before steps 3, 6 and 9: the state saved at step 4 must carry
    # the step-3 graph, since the teacher that made it is gone when the run resumes
    whole = train(tiny_args(tiny_data, tmp_path / "whole", tiny_bert_dir, graph_refreshes=3), progress=False)
    assert [r["step"] for r in whole["data"]["propagation"]["refreshes"]] == [3, 6, 9]

    def interrupt(step: int) -> None:
        if step == 6:
            raise KeyboardInterrupt

    args = tiny_args(tiny_data, tmp_path / "cut", tiny_bert_dir, graph_refreshes=3)
    with pytest.raises(KeyboardInterrupt):
        train(args, progress=False, on_step=interrupt)
    state = json.loads((tmp_path / "cut" / "state" / "state.json").read_text())
    assert state["step"] == 4  # the last state written before the interruption
    assert [r["step"] for r in state["graph_refreshes"]] == [3]
    with pytest.raises(NanonetError, match="pass --resume"):
        train(args, progress=False)
    steps_run = []
    resumed = train(
        tiny_args(tiny_data, tmp_path / "cut", tiny_bert_dir, graph_refreshes=3, resume=True), progress=False, on_step=steps_run.append
    )
    assert steps_run[0] == 5  # continued at the right step
    for r in (whole, resumed):
        r["settings"].pop("out")
        r["settings"].pop("resume")
    assert comparable(resumed) == comparable(whole)
    assert (tmp_path / "cut/student/model.safetensors").read_bytes() == (tmp_path / "whole/student/model.safetensors").read_bytes()


def test_resume_refuses_changed_settings(tiny_data, tiny_bert_dir, tmp_path):
    train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=4), progress=False)
    with pytest.raises(NanonetError, match=r"--seed \(3 -> 5\)"):
        train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=4, seed=5, resume=True), progress=False)


def test_cohort_terms_switch_on_after_teacher_warmup(tiny_bert_dir):
    from conftest import random_sequences

    from nanonet.model import NanoClassifier, pack_sequences

    enc = load_pretrained(str(tiny_bert_dir)).encoder
    cohort = Cohort(
        NanoClassifier(enc, 3),
        [NanoClassifier(make_student(enc, [0, 2, 4]), 3), NanoClassifier(make_student(enc, [1, 3, 5]), 3)],
        temperature=2.0,
        kd_weight=1.0,
        hidden_weight=1.0,
        mutual_loss="mse",
    )
    labeled = pack_sequences(random_sequences([5, 9, 7]))
    y = torch.tensor([0, 1, 2])
    warm = cohort(StepInputs(labeled, y))
    assert set(warm) == {"teacher_ce", "total"} and warm["teacher_ce"] > 0
    supervised = cohort(StepInputs(labeled, y, students_active=True))
    assert set(supervised) == {"teacher_ce", "student_ce", "total"} and supervised["student_ce"] > 0
    unl = pack_sequences(random_sequences([12, 20, 6, 8], seed=1))
    terms = cohort(StepInputs(labeled, y, True, unl, [(unl, 0.0), (unl, 0.1)], 0.5))
    for key in ("teacher_ce", "student_ce", "kd", "hidden", "mutual"):
        assert terms[key] > 0, key
    expected = terms["teacher_ce"] + terms["student_ce"] + terms["kd"] + terms["hidden"] + 0.5 * terms["mutual"]
    torch.testing.assert_close(terms["total"], expected)


def test_graph_term_trains_the_teacher_during_its_warmup(tiny_bert_dir):
    from conftest import random_sequences

    from nanonet.model import NanoClassifier, pack_sequences

    enc = load_pretrained(str(tiny_bert_dir)).encoder
    cohort = Cohort(
        NanoClassifier(enc, 3),
        [NanoClassifier(make_student(enc, [0, 2, 4]), 3)],
        temperature=2.0,
        kd_weight=1.0,
        hidden_weight=0.0,
        mutual_loss="mse",
        graph_weight=0.5,
    )
    labeled = pack_sequences(random_sequences([5, 9, 7]))
    y = torch.tensor([0, 1, 2])
    unl = pack_sequences(random_sequences([12, 20, 6, 8], seed=1))
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.4, 0.3, 0.3]])
    warm = cohort(StepInputs(labeled, y, False, unl, [], 0.0, unl, probs, torch.ones(4)))
    assert set(warm) == {"teacher_ce", "graph", "total"} and warm["graph"] > 0
    torch.testing.assert_close(warm["total"], warm["teacher_ce"] + 0.5 * warm["graph"])
    silent = cohort(StepInputs(labeled, y, False, unl, [], 0.0, unl, probs, torch.zeros(4)))
    assert silent["graph"] == 0  # no certainty, no pull


def test_students_learn_from_the_propagated_labels_on_their_views(tiny_bert_dir):
    from conftest import random_sequences

    from nanonet.model import NanoClassifier, pack_sequences
    from nanonet.train import losses

    enc = load_pretrained(str(tiny_bert_dir)).encoder
    torch.manual_seed(0)
    students = [NanoClassifier(make_student(enc, [0, 2, 4]), 3), NanoClassifier(make_student(enc, [1, 3, 5]), 3)]
    cohort = Cohort(
        NanoClassifier(enc, 3),
        students,
        temperature=2.0,
        kd_weight=1.0,
        hidden_weight=0.0,
        mutual_loss="mse",
        graph_weight=0.5,
        student_graph_weight=0.25,
    ).eval()
    labeled, y = pack_sequences(random_sequences([5, 9, 7])), torch.tensor([0, 1, 2])
    unl = pack_sequences(random_sequences([12, 20, 6, 8], seed=1))
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.4, 0.3, 0.3]])
    weights = torch.tensor([1.0, 0.5, 0.8, 0.1])
    terms = cohort(StepInputs(labeled, y, True, unl, [(unl, 0.0), (unl, 0.0)], 0.0, unl, probs, weights))
    expected = sum(losses.propagated(s(unl), probs, weights) for s in students)  # eval mode: the views are the batch itself
    torch.testing.assert_close(terms["student_graph"], expected)
    torch.testing.assert_close(
        terms["total"], terms["teacher_ce"] + 0.5 * terms["graph"] + terms["student_ce"] + terms["kd"] + 0.25 * terms["student_graph"]
    )
    off = Cohort(cohort.teacher, students, temperature=2.0, kd_weight=1.0, hidden_weight=0.0, mutual_loss="mse", graph_weight=0.5).eval()
    assert off(StepInputs(labeled, y, True, unl, [(unl, 0.0), (unl, 0.0)], 0.0, unl, probs, weights))["student_graph"] == 0


def test_each_member_keeps_its_latest_state_within_dev_noise_of_its_best(monkeypatch):
    from nanonet.train import selection
    from nanonet.train.distributed import Context

    model = torch.nn.Linear(2, 2)  # any module: evaluate() is scripted
    member = selection.Member("student 0", model, [0], None)
    script = iter([0.5, 0.85, 0.80, 0.70, 0.825])  # dev accuracy on 40 examples at steps 1..5
    monkeypatch.setattr(selection, "evaluate", lambda *a, **k: {"accuracy": (acc := next(script)), "macro_f1": acc})
    kept = []
    for step in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(step)  # the state at this step
        selection.evaluate_members([member], None, [0] * 40, 3, 1024, Context(device=torch.device("cpu")), step)
        kept.append(member.best["step"])
    # 0.80 is within one standard error of 0.85 (0.056 on 40 examples): kept; 0.70 is not; 0.825 is
    assert kept == [1, 2, 3, 3, 5]
    assert member.best == {"accuracy": 0.825, "macro_f1": 0.825, "step": 5, "peak": 0.85}
    assert float(member.best_state["weight"][0, 0]) == 5.0


def test_cutoff_view_keeps_ends_and_drops_tokens():
    from nanonet.model import pack_sequences

    batch = pack_sequences([list(range(10, 60)), [1, 2, 3]])
    view = cutoff(batch, 0.5, torch.Generator().manual_seed(0))
    bounds = view.cu_seqlens.tolist()
    first = view.input_ids[bounds[0] : bounds[1]].tolist()
    assert first[0] == 10 and first[-1] == 59 and 10 < len(first) < 45
    assert view.input_ids[bounds[1] : bounds[2]].tolist()[0] == 1
    assert view.position_ids[bounds[1]] == 0


def test_bad_data_via_cli_is_one_line(tmp_path, tiny_bert_dir):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"text": "w1", "label": "a"}\n{"text": "w2"}\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanonet",
            "train",
            "--data",
            str(tmp_path / "d"),
            "--out",
            str(tmp_path / "r"),
            "--teacher",
            str(tiny_bert_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'd' / 'train.jsonl'}: row 2: missing label in column 'label'"


def test_two_process_gloo_ddp(tiny_data, tiny_bert_dir, tmp_path):
    """torchrun with 2 CPU processes: both ranks end with identical weights, and the
    result is an ordinary checkpoint."""
    out = tmp_path / "ddp"
    env = {**os.environ, "NANONET_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "nanonet",
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--teacher",
            str(tiny_bert_dir),
            "--labels-per-class",
            "4",
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["training"]["world_size"] == 2
    digests = [r["weights_sha256"] for r in report["ranks"]]
    assert [r["rank"] for r in report["ranks"]] == [0, 1] and digests[0] == digests[1]
    assert load_checkpoint(out / "student").labels == ["alpha", "beta", "gamma"]


def test_default_student_layers_are_ordered_model_views():
    from nanonet.train.trainer import default_student_layers

    # half the layers: the bottom ones and the last first, then every other layer
    assert default_student_layers(6, 1) == [[0, 1, 5]]
    assert default_student_layers(6, 3) == [[0, 1, 5], [0, 2, 4], [1, 3, 5]]
    assert default_student_layers(12, 2) == [[0, 1, 2, 3, 4, 11], [0, 2, 4, 6, 8, 10]]
    assert default_student_layers(4, 1) == [[0, 3]]
    assert default_student_layers(5, 1) == [[0, 1, 4]]
    assert default_student_layers(1, 2) == [[0], [0]]


def test_unusable_attention_backend_is_a_clear_error(tiny_data, tiny_bert_dir, tmp_path):
    with pytest.raises(NanonetError, match="--attention: attention backend 'flash' is unavailable here"):
        train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, attention="flash"), progress=False)
    with pytest.raises(NanonetError, match="--attention: unknown backend 'magic'"):
        train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, attention="magic"), progress=False)


def test_a_run_without_selection_labels_keeps_final_states_and_chooses_by_agreement(tiny_data, tiny_bert_dir, tmp_path):
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, dev_per_class=0), progress=False)
    assert report["data"]["dev"] == 0 and report["data"]["labeled_seen"] == 12  # 4 per class, 3 classes, nothing held for selection
    assert all(not h.get("dev") for h in report["history"])  # no dev check ran
    for member in [report["teacher"], *report["students"]]:
        assert member["dev"] == {"accuracy": None, "macro_f1": None}
        assert member["test"]["accuracy"] is not None
    selection = report["selection"]
    assert selection["tied_on_dev"] == [0, 1]  # nothing to tell them apart but the teacher
    agreement = selection["teacher_agreement"]
    assert report["chosen_student"] == max((0, 1), key=lambda i: (agreement[str(i)], -i))


def test_few_steps_still_train_the_students(tiny_data, tiny_bert_dir, tmp_path):
    """A run shorter than the teacher warm-up still gives the students half the steps."""
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=4, eval_every=2, teacher_warmup_steps=30), progress=False)
    assert report["history"][-1]["student_ce"] > 0


def test_choose_student_breaks_dev_noise_by_teacher_agreement(tiny_bert_dir):
    import numpy as np
    from conftest import random_sequences

    from nanonet.data.tokens import Tokenized
    from nanonet.model import NanoClassifier
    from nanonet.train.evaluate import predict
    from nanonet.train.selection import Member, choose_student

    torch.manual_seed(0)
    enc = load_pretrained(str(tiny_bert_dir)).encoder
    teacher = NanoClassifier(enc, 3).eval()
    twin = NanoClassifier(enc, 3).eval()
    twin.load_state_dict(teacher.state_dict())  # predicts exactly as the teacher
    other = NanoClassifier(make_student(enc, [1, 3]), 3).eval()
    seqs = random_sequences([6, 9, 12, 7, 15, 8, 10, 11] * 4, seed=2)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    unl = Tokenized(np.concatenate([np.asarray(s, np.int32) for s in seqs]), offsets)
    device = torch.device("cpu")
    assert (predict(other, unl, 4096, device) != predict(teacher, unl, 4096, device)).any()

    def members(dev_other: float, dev_twin: float) -> list:
        return [
            Member("teacher", teacher, [], None),
            Member("student 0", other, [1, 3], None, best={"accuracy": dev_other, "macro_f1": 0.0, "step": 1}),
            Member("student 1", twin, [0], None, best={"accuracy": dev_twin, "macro_f1": 0.0, "step": 1}),
        ]

    # one example apart on 40: a tie, the student that agrees with the teacher wins
    picked = choose_student(members(0.975, 0.95), 40, unl, seed=1, max_tokens=4096, device=device)
    assert picked["chosen"] == 1 and picked["tied_on_dev"] == [0, 1] and picked["teacher_agreement"]["1"] == 1.0
    # a lead the dev set can resolve stands
    picked = choose_student(members(0.95, 0.80), 40, unl, seed=1, max_tokens=4096, device=device)
    assert picked["chosen"] == 0 and picked["teacher_agreement"] is None


def test_graph_term_reaches_the_teacher_during_its_warmup_in_a_run(tiny_data, tiny_bert_dir, tmp_path):
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=4, eval_every=1, teacher_warmup_steps=2), progress=False)
    warm, after = report["history"][0], report["history"][-1]
    assert "graph" in warm and warm["graph"] > 0 and "kd" not in warm  # step 1: only the teacher trains, on labels and graph
    assert "kd" in after and "graph" in after
    assert after["student_graph"] > 0  # the students learn from the propagated labels too, once they start
    teacher_only = train(
        tiny_args(
            tiny_data, tmp_path / "teacher_only", tiny_bert_dir, steps=4, eval_every=1, teacher_warmup_steps=2, student_graph_weight=0.0
        ),
        progress=False,
    )
    assert teacher_only["history"][-1]["student_graph"] == 0 and teacher_only["history"][-1]["graph"] > 0
    off = train(
        tiny_args(
            tiny_data,
            tmp_path / "off",
            tiny_bert_dir,
            steps=4,
            eval_every=1,
            teacher_warmup_steps=2,
            graph_weight=0.0,
            student_graph_weight=0.0,
        ),
        progress=False,
    )
    assert "graph" not in off["history"][0] and off["data"]["propagation"] is None


def test_refresh_steps_are_evenly_spaced_inside_the_run():
    from nanonet.train.propagation import refresh_steps

    assert refresh_steps(146, 1) == [73]
    assert refresh_steps(12, 3) == [3, 6, 9]
    assert refresh_steps(100, 0) == []
    assert refresh_steps(1, 1) == []  # never before the first step


def test_graph_refresh_propagates_over_the_training_teachers_embeddings(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    import nanonet.train.propagation as propagation

    calls, propagate = [], propagation.propagate

    def recording(labeled, labels, unlabeled, num_classes, k, alpha):
        calls.append(labeled.clone())
        return propagate(labeled, labels, unlabeled, num_classes, k=k, alpha=alpha)

    monkeypatch.setattr(propagation, "propagate", recording)
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=6, eval_every=3, graph_refreshes=1), progress=False)
    assert len(calls) == 2  # the pretrained graph, then one refresh
    assert not torch.allclose(calls[0], calls[1])  # the teacher trained in between: new embeddings, new graph
    (refresh,) = report["data"]["propagation"]["refreshes"]
    assert refresh["step"] == 3 and refresh["texts"] == report["data"]["propagation"]["texts"] and 0 <= refresh["changed"] <= 1
    calls.clear()
    off = train(tiny_args(tiny_data, tmp_path / "off", tiny_bert_dir, steps=6, eval_every=3, graph_refreshes=0), progress=False)
    assert len(calls) == 1 and off["data"]["propagation"]["refreshes"] == []
    with pytest.raises(NanonetError, match="--graph-refreshes"):
        train(tiny_args(tiny_data, tmp_path / "bad", tiny_bert_dir, graph_refreshes=-1), progress=False)


def test_min_steps_raises_a_short_epoch_count(tiny_data, tiny_bert_dir, tmp_path):
    # tiny_data's 105 unlabeled texts make a handful of 256-token batches: one epoch is far fewer than 30 steps
    few = train(tiny_args(tiny_data, tmp_path / "few", tiny_bert_dir, steps=None, epochs=1.0, min_steps=0, eval_every=50), progress=False)
    assert few["training"]["steps"] < 30
    more = train(
        tiny_args(tiny_data, tmp_path / "more", tiny_bert_dir, steps=None, epochs=1.0, min_steps=30, eval_every=50), progress=False
    )
    assert more["training"]["steps"] == 30
    per_class = train(
        tiny_args(
            tiny_data, tmp_path / "per-class", tiny_bert_dir, steps=None, epochs=1.0, min_steps=0, min_steps_per_class=10, eval_every=50
        ),
        progress=False,
    )
    assert per_class["training"]["steps"] == 10 * 3  # tiny_data has 3 classes


def test_max_length_cuts_training_and_what_ships_alike(tiny_data, tiny_bert_dir, tmp_path):
    from tokenizers import Tokenizer

    from nanonet.model import pack_sequences
    from nanonet.train.evaluate import evaluate_checkpoint

    assert load_pretrained(str(tiny_bert_dir)).encoder.config.max_length > 8
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, **LEARNING, max_length=8), progress=False)
    assert report["data"]["max_length"] == 8
    chosen = report["students"][report["chosen_student"]]
    ckpt = load_checkpoint(tmp_path / "run" / "student")
    assert ckpt.model.config.max_length == 8  # export and the runtime truncate from this
    # the run's test accuracy is that of the texts cut to 8 tokens, computed here ...
    rows = [json.loads(line) for line in (tiny_data / "test.jsonl").read_text().splitlines()]
    tok = Tokenizer.from_file(str(tmp_path / "run" / "student" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(8)
    with torch.no_grad():
        logits = ckpt.model.eval()(pack_sequences([e.ids for e in tok.encode_batch([r["text"] for r in rows])]))
    cut = sum(ckpt.labels[p] == r["label"] for p, r in zip(logits.argmax(-1).tolist(), rows)) / len(rows)
    assert chosen["test"]["accuracy"] == pytest.approx(cut, abs=1e-9)
    # ... and what `nanonet eval` gives the saved student afterwards
    assert evaluate_checkpoint(str(tmp_path / "run" / "student"), str(tiny_data / "test.jsonl"))["accuracy"] == pytest.approx(cut, abs=1e-9)


def test_the_default_max_length_never_exceeds_the_teachers(tiny_data, tiny_bert_dir, tmp_path):
    own = load_pretrained(str(tiny_bert_dir)).encoder.config.max_length
    assert own < TrainArgs.max_length  # the tiny teacher's 64 positions, below the default 128
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=2), progress=False)
    assert report["data"]["max_length"] == own == load_checkpoint(tmp_path / "run" / "student").model.config.max_length


def test_a_sigkilled_cli_run_resumes_to_the_same_student(tiny_data, tiny_bert_dir, tmp_path):
    """A real `nanonet train` process killed with SIGKILL (no cleanup of any kind) between
    two saved states, then resumed, ends with the student an uninterrupted run writes."""
    import signal
    import subprocess
    import sys
    import time

    def command(out: Path, *extra: str) -> list[str]:
        flags = ["--data", str(tiny_data), "--teacher", str(tiny_bert_dir), "--labels-per-class", "4", "--dev-per-class", "8"]
        flags += ["--steps", "60", "--eval-every", "5", "--contrastive-steps", "0", "--threads", "1", "--seed", "3", "--json"]
        return [sys.executable, "-m", "nanonet", "train", "--out", str(out), *flags, *extra]

    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(command(tmp_path / "cut"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "cut" / "state" / "state.json"
    deadline = time.monotonic() + 300
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    saved = json.loads(state.read_text())["step"]
    assert 5 <= saved < 60 and not (tmp_path / "cut" / "report.json").exists()
    resumed = subprocess.run(command(tmp_path / "cut", "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "cut/student/model.safetensors").read_bytes() == (tmp_path / "whole/student/model.safetensors").read_bytes()
