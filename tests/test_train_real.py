"""The slower test: NanoNet on the repository's ag_news sample (data/ag_news_sample: 600
train and 200 test texts, 4 classes) with the real default teacher, against the same
student trained on the labels alone, then the chosen student exported and run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from nanonet.model import load_checkpoint, pack_sequences  # noqa: E402
from nanonet.train import TrainArgs, train  # noqa: E402
from nanonet.train.args import SUPERVISED_ONLY  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "ag_news_sample"

# 10 labels per class drawn from train (none held out for selection, the default), the other
# 560 train texts unlabeled; a short run: 40 steps of about 20 texts each, texts cut at 64 tokens
SHORT = dict(labels_per_class=10, seed=1, steps=40, eval_every=20, max_length=64, labeled_tokens=1024, unlabeled_tokens=1024, threads=2)
# bench/label_scarce.py's "student 0,2,4, supervised only" row: one student, no unlabeled text
SUPERVISED = dict(students=1, student_layers=[[0, 2, 4]], **SUPERVISED_ONLY)


def _right(ckpt_dir: Path, rows: list[dict], max_length: int) -> list[bool]:
    """Whether the checkpoint classifies each row correctly, computed here from its files."""
    from tokenizers import Tokenizer

    ckpt = load_checkpoint(ckpt_dir)
    tok = Tokenizer.from_file(str(ckpt_dir / "tokenizer.json"))
    tok.no_padding()  # the teacher's tokenizer.json pads to a fixed length; the model takes real tokens only
    tok.enable_truncation(max_length)
    with torch.no_grad():
        pred = ckpt.model.eval()(pack_sequences([e.ids for e in tok.encode_batch([r["text"] for r in rows])])).argmax(-1).tolist()
    return [ckpt.labels[p] == r["label"] for p, r in zip(pred, rows)]


@pytest.mark.slow
def test_nanonet_student_beats_the_supervised_student_on_the_ag_news_sample(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "cache")
    threads = torch.get_num_threads()  # train() sets torch's thread count for the process
    try:
        # measured (2-core CPU) with the first version's defaults: NanoNet 107 s, chosen student 0.835; supervised 36 s, 0.790;
        # the current defaults (contrastive teacher, offline distillation) pass the same bar
        nanonet = train(TrainArgs(data=str(DATA), out=str(tmp_path / "run"), **SHORT), progress=False)  # the defaults
        supervised = train(TrainArgs(data=str(DATA), out=str(tmp_path / "supervised"), **SHORT, **SUPERVISED), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert nanonet["data"]["test"] == supervised["data"]["test"] == 200
    assert nanonet["data"]["labeled"] == supervised["data"]["labeled"] == 40
    assert nanonet["data"]["labeled_sha256"] == supervised["data"]["labeled_sha256"]  # the same 40 labels
    assert nanonet["training"]["steps"] == supervised["training"]["steps"] == 40
    chosen = nanonet["students"][nanonet["chosen_student"]]
    baseline = supervised["students"][0]
    assert baseline["layers"] == [0, 2, 4] and supervised["data"]["propagation"] is None
    print(f"test accuracy: NanoNet chosen student {chosen['test']['accuracy']:.3f}, supervised student {baseline['test']['accuracy']:.3f}")

    # both figures are the saved checkpoints' own; the margin is counted text by text: the
    # texts only the NanoNet student gets right against those only the supervised one does
    # (measured 12 against 3, a one-sided sign test p of 0.018: not test-set noise, when runs
    # held 10 per class for selection; with none held, the default now, 0.830 against
    # 0.790). The margin is this seed's: seed 2 at this budget measured 0.820 against 0.815
    rows = [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines()]
    ours, theirs = _right(tmp_path / "run" / "student", rows, 64), _right(tmp_path / "supervised" / "student", rows, 64)
    assert chosen["test"]["accuracy"] == pytest.approx(sum(ours) / len(rows), abs=1e-9)
    assert baseline["test"]["accuracy"] == pytest.approx(sum(theirs) / len(rows), abs=1e-9)
    only_ours = sum(a and not b for a, b in zip(ours, theirs))
    only_theirs = sum(b and not a for a, b in zip(ours, theirs))
    assert only_ours - only_theirs >= 4, (only_ours, only_theirs)  # at least 2 points (measured 4.5) above the supervised student
    assert load_checkpoint(tmp_path / "run" / "student").model.config.num_layers == 3

    # the trained student exports, verifies, and the torch-free runtime predicts as torch does
    pytest.importorskip("onnxscript")
    import numpy as np

    from nanonet import runtimes
    from nanonet.export.bundle import export_bundle

    manifest = export_bundle(tmp_path / "run" / "student", tmp_path / "bundle", max_length=64)
    assert all(c["max_abs_diff"] <= 1e-4 and c["argmax_equal"] for c in manifest["export"]["verification"])
    assert manifest["provenance"]["training"]["test"]["accuracy"] == chosen["test"]["accuracy"]
    texts = [r["text"] for r in rows[:40]]
    clf = runtimes.load(tmp_path / "bundle")
    got = clf.predict_proba(texts)
    student = load_checkpoint(tmp_path / "run" / "student")
    with torch.no_grad():
        ref = student.model(pack_sequences([e.ids for e in clf.tokenizer.encode_batch(texts)])).softmax(-1).numpy()
    assert np.abs(got - ref).max() < 1e-4 and (got.argmax(-1) == ref.argmax(-1)).all()
