"""A bundle from an untrusted source cannot make the runtime read outside it: entries that
leave the bundle, symbolic links and external weights are refused with one line that says
nothing of what they point at; what a backend loads is the bytes it verified; bundles are
written with the user's umask."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from nanonet import runtimes
from nanonet.runtimes.bundle import read_bundle, sha256
from nanonet.runtimes.errors import NanonetError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from nanonet.export.bundle import export_bundle  # noqa: E402
from nanonet.model.checkpoint import save_checkpoint  # noqa: E402
from nanonet.model.encoder import NanoClassifier  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402


@pytest.fixture
def bundle(tiny_bundle) -> Path:
    return tiny_bundle


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _add_entry(copy: Path, name: str, digest: str) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": digest, "bytes": 1}
    (copy / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "sub/../../outside", "..", "a\\..\\b", ""])
def test_an_entry_outside_the_bundle_is_refused(bundle, tmp_path, name):
    copy = _copy(bundle, tmp_path)
    _add_entry(copy, name, "0" * 64)
    with pytest.raises(NanonetError, match=r"file entry .* is not a plain path inside the bundle; refused$"):
        read_bundle(copy)


def test_the_refusal_says_nothing_of_whether_the_target_exists(bundle, tmp_path):
    """With the right sha256 of a real file or none at all, the same words: no probing."""
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    messages = []
    for target, digest in ((outside, sha256(outside)), (tmp_path / "absent.txt", "0" * 64)):
        copy = _copy(bundle, tmp_path / target.stem)
        _add_entry(copy, os.path.relpath(target, copy), digest)
        with pytest.raises(NanonetError) as e:
            read_bundle(copy)
        messages.append(str(e.value).replace(target.stem, "X").replace(str(tmp_path / target.stem), "B"))
    assert messages[0] == messages[1]
    assert "sha256" not in messages[0] and "missing" not in messages[0]


def test_a_symbolic_link_in_a_bundle_is_refused(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(copy / "model.onnx", outside)  # same bytes, same sha256
    (copy / "model.onnx").symlink_to(outside)
    with pytest.raises(NanonetError, match=r"'model.onnx' is a symbolic link; bundles may not hold links$"):
        read_bundle(copy)


def test_the_bundle_directory_itself_may_be_a_link(bundle, tmp_path):
    (tmp_path / "latest").symlink_to(bundle, target_is_directory=True)
    assert runtimes.load(tmp_path / "latest").predict(["w1 w2"])[0].label in ("a", "b")


@pytest.mark.parametrize("listed", [False, True])
def test_weights_in_another_file_are_refused_listed_or_not(bundle, tmp_path, listed):
    """ONNX Runtime gets the verified bytes of model.onnx, never its path, so it reads no
    other file: a graph whose weights live beside it (external data) does not load."""
    from nanonet.runtimes.bundle import Manifest, write_bundle

    src = read_bundle(bundle)
    work = tmp_path / "work"
    work.mkdir()
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.save_model(model, str(work / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    files = {"model.onnx": work / "model.onnx", "tokenizer.json": bundle / "tokenizer.json"}
    if listed:
        files["weights.bin"] = work / "weights.bin"
    out = write_bundle(tmp_path / "external", Manifest(**src.manifest.__dict__), files)
    if not listed:
        shutil.copy(work / "weights.bin", out / "weights.bin")
    with pytest.raises(
        NanonetError, match=r"model.onnx: refers to weights in another file \(external data\); a bundle keeps them inside model.onnx$"
    ):
        runtimes.load(out)


def test_a_file_changed_after_the_check_is_refused_when_it_is_loaded(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    checked = read_bundle(copy)  # verified here
    data = bytearray((copy / "tokenizer.json").read_bytes())
    data[-2:-2] = b" "  # still valid JSON, different bytes
    (copy / "tokenizer.json").write_bytes(bytes(data))
    with pytest.raises(NanonetError, match=r"tokenizer.json: sha256 does not match the manifest"):
        runtimes.Classifier(checked)


def test_bundles_are_written_with_the_users_umask(tiny_bert_dir, tmp_path):
    src = load_pretrained(str(tiny_bert_dir))
    old = os.umask(0o022)
    try:
        ckpt = save_checkpoint(tmp_path / "ckpt", NanoClassifier(src.encoder, 2, src.pooling), ["a", "b"], src.path)
        export_bundle(ckpt, tmp_path / "bundle", max_length=32)
    finally:
        os.umask(old)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work directory left beside it
