"""Every phase of a run that takes long shows a bar, and each bar reaches its total."""

from __future__ import annotations

from contextlib import contextmanager

from nanonet.train import trainer
from nanonet.train.trainer import train
from tests.test_train import tiny_args


def test_every_long_phase_has_a_bar_that_completes(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("NANONET_NO_PROGRESS", raising=False)
    real = trainer.phase_bar
    bars: dict[str, list[int]] = {}  # label -> [total, advanced]

    @contextmanager
    def recording(enabled, label, total, unit):
        bars[label] = [total, 0]
        with real(enabled, label, total, unit) as advance:

            def counted(n: int) -> None:
                bars[label][1] += n
                advance(n)

            yield counted if advance else None

    monkeypatch.setattr(trainer, "phase_bar", recording)
    args = tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, contrastive_steps=3, distill="offline", teacher_warmup_steps=0)
    report = train(args, progress=True)

    sizes = report["data"]
    members = 1 + args.students
    assert bars == {
        "adapt teacher": [3, 3],
        "label propagation": [sizes["unlabeled"] + sizes["labeled"] + sizes["dev"]] * 2,  # the dev labels seed it too
        "test": [sizes["test"] * members] * 2,
    }


def test_no_bar_when_progress_is_off(tiny_data, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("NANONET_NO_PROGRESS", raising=False)
    shown = []
    real = trainer.phase_bar

    @contextmanager
    def recording(enabled, label, total, unit):
        with real(enabled, label, total, unit) as advance:
            shown.append(advance is not None)
            yield advance

    monkeypatch.setattr(trainer, "phase_bar", recording)
    train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, contrastive_steps=2, steps=2), progress=False)
    assert shown and not any(shown)
