"""nanonet checkpoints: a bitwise round trip, atomic writes, and one-line errors for bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import random_sequences

from nanonet.model import (
    NanoClassifier,
    is_checkpoint,
    load_checkpoint,
    load_pretrained,
    make_student,
    pack_sequences,
    save_checkpoint,
)
from nanonet.runtimes.errors import NanonetError

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def _classifier(model_dir: Path, pooling: str = "mean") -> NanoClassifier:
    teacher = load_pretrained(str(model_dir)).encoder
    student = make_student(teacher, [0, 2, 4])
    model = NanoClassifier(student, len(LABELS), pooling=pooling)
    with torch.no_grad():
        model.head.weight.normal_()
    return model.eval()


@pytest.fixture()
def checkpoint(tmp_path, tiny_modernbert_dir) -> Path:
    return save_checkpoint(tmp_path / "ckpt", _classifier(tiny_modernbert_dir), LABELS, tiny_modernbert_dir)


@pytest.mark.parametrize("fixture,pooling", [("tiny_bert_dir", "cls"), ("tiny_modernbert_dir", "mean")])
def test_round_trip_is_bitwise(request, tmp_path, fixture, pooling):
    model_dir = request.getfixturevalue(fixture)
    model = _classifier(model_dir, pooling)
    path = save_checkpoint(tmp_path / "ckpt", model, LABELS, model_dir)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "labels.json", "model.safetensors", "tokenizer.json"]
    assert is_checkpoint(path)
    loaded = load_checkpoint(path)
    assert loaded.labels == LABELS
    assert loaded.model.config == model.config and loaded.model.pooling == pooling
    before, after = model.state_dict(), loaded.model.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype and torch.equal(before[name], after[name]), name
    batch = pack_sequences(random_sequences([12, 3, 30]))
    with torch.no_grad():
        assert torch.equal(model(batch), loaded.model(batch))
    # and the file on disk does not change when saved again
    again = save_checkpoint(tmp_path / "again", loaded.model, loaded.labels, path)
    assert (again / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()


def test_save_replaces_atomically_and_keeps_the_old_one_on_failure(checkpoint, tiny_modernbert_dir, monkeypatch):
    original = (checkpoint / "model.safetensors").read_bytes()
    import safetensors.torch

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(checkpoint, _classifier(tiny_modernbert_dir), LABELS, tiny_modernbert_dir)
    assert (checkpoint / "model.safetensors").read_bytes() == original
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ckpt"]  # no temporary left behind


def _one_line_error(path: Path) -> str:
    with pytest.raises(NanonetError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_truncated_weights(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = _one_line_error(checkpoint)
    assert str(weights) in message and "truncated" in message


def test_corrupt_weights(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(b"\x00garbage" * 100)
    assert str(weights) in _one_line_error(checkpoint)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json", "labels.json"])
def test_missing_file(checkpoint, name):
    (checkpoint / name).unlink()
    message = _one_line_error(checkpoint)
    assert str(checkpoint / name) in message and "missing" in message


def test_unknown_family(checkpoint):
    config_file = checkpoint / "config.json"
    config = json.loads(config_file.read_text())
    config["encoder"]["family"] = "gpt2"
    config_file.write_text(json.dumps(config))
    message = _one_line_error(checkpoint)
    assert str(config_file) in message and "unknown model family 'gpt2'" in message


def test_unknown_hf_family_and_unknown_version(tmp_path, checkpoint, tiny_bert_dir):
    hf = tmp_path / "hf"
    shutil.copytree(tiny_bert_dir, hf)
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(NanonetError, match=r"config.json: unknown model family 'gpt2'"):
        load_pretrained(str(hf))
    config = json.loads((checkpoint / "config.json").read_text())
    config["format_version"] = 99
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert "unknown format_version 99" in _one_line_error(checkpoint)


def test_weights_that_do_not_match_the_config(checkpoint):
    config_file = checkpoint / "config.json"
    config = json.loads(config_file.read_text())
    config["encoder"]["layer_types"].append("global")
    config["encoder"]["layer_ids"].append(9)
    config_file.write_text(json.dumps(config))
    assert "do not match config.json" in _one_line_error(checkpoint)


def test_hf_checkpoint_with_truncated_weights(tmp_path, tiny_bert_dir):
    hf = tmp_path / "hf"
    shutil.copytree(tiny_bert_dir, hf)
    weights = hf / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(NanonetError, match="corrupt or truncated") as e:
        load_pretrained(str(hf))
    assert str(weights) in str(e.value)


def test_pickle_bin_is_read_weights_only(tmp_path, tiny_bert_dir):
    """A pytorch_model.bin loads only through weights_only=True: a pickle payload is refused."""
    from safetensors.torch import load_file

    hf = tmp_path / "hf"
    shutil.copytree(tiny_bert_dir, hf)
    state = load_file(hf / "model.safetensors")
    (hf / "model.safetensors").unlink()
    torch.save(state, hf / "pytorch_model.bin")
    a, b = load_pretrained(str(hf)).encoder, load_pretrained(str(tiny_bert_dir)).encoder
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Payload()}, hf / "pytorch_model.bin")
    with pytest.raises(NanonetError, match="weights-only"):
        load_pretrained(str(hf))


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from nanonet.model.hf import resolve

    with pytest.raises(NanonetError, match="could not fetch from the Hugging Face hub") as e:
        resolve("nanonet-tests/no-such-model")
    assert "\n" not in str(e.value)
