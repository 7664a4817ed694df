"""The slower test: a short NanoNet run on a slice of real ag_news with the default teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from nanonet.model import load_checkpoint
from nanonet.train import TrainArgs, train

AG_NEWS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news"


def _slice(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    target.mkdir(parents=True)
    for split, n in per_class.items():
        seen: dict[str, int] = {}
        rows = []
        for line in (source / f"{'test' if split == 'test' else 'train'}.jsonl").read_text().splitlines():
            row = json.loads(line)
            offset = 1000 if split == "dev" else 0  # dev rows come from further down train
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            if offset < seen[row["label"]] <= offset + n:
                rows.append(line)
        (target / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return target


@pytest.mark.slow
@pytest.mark.skipif(not AG_NEWS.is_dir(), reason="needs ../shared/data/ag_news")
def test_student_beats_chance_on_real_ag_news(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "cache")
    data = _slice(AG_NEWS, tmp_path / "ag_news", {"train": 60, "dev": 10, "test": 50})
    args = TrainArgs(data=str(data), out=str(tmp_path / "run"), labels_per_class=10, seed=1, steps=20, eval_every=10,
                     teacher_warmup_steps=6, unlabeled_tokens=1024, labeled_tokens=1024, max_length=48)  # fmt: skip
    report = train(args, progress=False)
    chosen = report["students"][report["chosen_student"]]
    assert report["data"]["test"] == 200 and report["data"]["labeled"] == 40
    print(f"chosen student test accuracy {chosen['test']['accuracy']:.3f} in {report['training']['seconds']:.0f}s")
    assert chosen["test"]["accuracy"] >= 0.6, chosen  # chance is 0.25
    assert load_checkpoint(tmp_path / "run" / "student").model.config.num_layers == 3

    # the trained student exports, verifies, and the torch-free runtime predicts as torch does
    pytest.importorskip("onnxscript")
    import numpy as np

    import runtimes
    from export.bundle import export_bundle
    from nanonet.model.packing import pack_sequences

    manifest = export_bundle(tmp_path / "run" / "student", tmp_path / "bundle", max_length=48)
    assert all(c["max_abs_diff"] <= 1e-4 and c["argmax_equal"] for c in manifest["export"]["verification"])
    assert manifest["provenance"]["training"]["test"]["accuracy"] == chosen["test"]["accuracy"]
    texts = [json.loads(line)["text"] for line in (data / "test.jsonl").read_text().splitlines()[:40]]
    clf = runtimes.load(tmp_path / "bundle")
    got = clf.predict_proba(texts)
    student = load_checkpoint(tmp_path / "run" / "student")
    with torch.no_grad():
        ref = student.model(pack_sequences([e.ids for e in clf.tokenizer.encode_batch(texts)])).softmax(-1).numpy()
    assert np.abs(got - ref).max() < 1e-4 and (got.argmax(-1) == ref.argmax(-1)).all()
