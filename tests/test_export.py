"""Export: the ONNX graph matches torch, the bundle is checked on read, the runtime agrees
with the torch model, and bad input gets one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from blocked_import import TRAINING_SIDE, run_without
from conftest import MODERNBERT_WINDOW, WORDS

from nanonet import runtimes
from nanonet.runtimes.errors import NanonetError

# before the imports that need them, so that a missing extra skips the module
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from nanonet.export.bundle import export_bundle  # noqa: E402
from nanonet.export.onnx_export import TOLERANCE, verification_inputs  # noqa: E402
from nanonet.model.checkpoint import load_checkpoint, make_student, save_checkpoint  # noqa: E402
from nanonet.model.encoder import NanoClassifier  # noqa: E402
from nanonet.model.hf import load_pretrained  # noqa: E402
from nanonet.model.packing import pack_sequences  # noqa: E402

LABELS = ["alpha", "beta", "gamma"]
TEXTS = [" ".join(WORDS[i : i + n]) for i, n in ((0, 3), (10, 40), (5, 1), (30, 17), (2, 25), (60, 9))]


def _checkpoint(source: Path, out: Path, layers: list[int] | None = None, **attention) -> Path:
    torch.manual_seed(1)
    src = load_pretrained(str(source))
    encoder = make_student(src.encoder, layers, **attention) if layers else src.encoder
    model = NanoClassifier(encoder, len(LABELS), src.pooling)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)  # a decisive head: argmax comparisons mean something
    return save_checkpoint(out, model, LABELS, src.path)


@pytest.fixture(scope="module")
def bert_bundle(tiny_bert_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A BERT student with alternating attention (global, local window 6, global, ...), exported."""
    root = tmp_path_factory.mktemp("bert-export")
    ckpt = _checkpoint(tiny_bert_dir, root / "ckpt", [0, 2, 3, 5], global_every=2, local_window=6)
    export_bundle(ckpt, root / "bundle", max_length=48)
    return ckpt, root / "bundle"


@pytest.fixture(scope="module")
def modernbert_bundle(tiny_modernbert_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("modernbert-export")
    ckpt = _checkpoint(tiny_modernbert_dir, root / "ckpt")
    export_bundle(ckpt, root / "bundle", max_length=64)
    return ckpt, root / "bundle"


def _torch_probs(ckpt: Path, texts: list[str], max_length: int) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    tok.enable_truncation(max_length)
    model = load_checkpoint(ckpt).model.eval()
    with torch.no_grad():
        return model(pack_sequences([e.ids for e in tok.encode_batch(texts)])).softmax(-1).numpy()


@pytest.mark.parametrize("which", ["bert_bundle", "modernbert_bundle"])
def test_export_verifies_three_shapes_within_tolerance(which, request):
    _, bundle = request.getfixturevalue(which)
    manifest = json.loads((bundle / "manifest.json").read_text())
    checks = manifest["export"]["verification"]
    assert len(checks) >= 3 and checks[0]["batch"] == 1
    assert any(c["batch"] > 1 for c in checks)
    assert all(c["max_abs_diff"] <= TOLERANCE and c["argmax_equal"] for c in checks)
    assert manifest["labels"] == LABELS and manifest["precision"] == "fp32"
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}


def test_verification_includes_a_sequence_longer_than_the_local_window(bert_bundle):
    model = load_checkpoint(bert_bundle[0]).model
    widest = max(2 * model.config.window(i) + 1 for i in range(model.config.num_layers))
    longest = max(len(s) for _, batch in verification_inputs(model, 48) for s in batch)
    assert 0 < widest < longest


def test_only_bert_takes_token_types(bert_bundle, modernbert_bundle):
    bert = json.loads((bert_bundle[1] / "manifest.json").read_text())
    modern = json.loads((modernbert_bundle[1] / "manifest.json").read_text())
    assert bert["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert modern["inputs"] == ["input_ids", "attention_mask"]
    assert modern["layers"]["0"]["attention"] == "global" and modern["layers"]["1"]["half_window"] == MODERNBERT_WINDOW // 2


@pytest.mark.parametrize("which", ["bert_bundle", "modernbert_bundle"])
def test_runtime_matches_torch_model(which, request):
    ckpt, bundle = request.getfixturevalue(which)
    clf = runtimes.load(bundle, threads=1)
    for batch_size in (1, 4, 32):
        got = clf.predict_proba(TEXTS, batch_size=batch_size)
        ref = _torch_probs(ckpt, TEXTS, clf.max_length)
        assert np.abs(got - ref).max() < 1e-5
        assert (got.argmax(-1) == ref.argmax(-1)).all()
    preds = clf.predict(TEXTS[:2])
    assert preds[0].label in LABELS and abs(sum(preds[0].scores.values()) - 1) < 1e-5


def test_legacy_route_also_verifies(tiny_bert_dir, tmp_path):
    ckpt = _checkpoint(tiny_bert_dir, tmp_path / "ckpt", [0, 1], global_every=2, local_window=6)
    manifest = export_bundle(ckpt, tmp_path / "bundle", max_length=48, route="legacy")
    assert manifest["export"]["route"] == "legacy"
    got = runtimes.load(tmp_path / "bundle").predict_proba(TEXTS)
    assert np.abs(got - _torch_probs(ckpt, TEXTS, 48)).max() < 1e-5


def test_failed_verification_writes_nothing(tiny_bert_dir, tmp_path, monkeypatch):
    ckpt = _checkpoint(tiny_bert_dir, tmp_path / "ckpt", [0, 1])
    monkeypatch.setattr("nanonet.export.onnx_export.TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(NanonetError, match="max abs logit diff .* nothing was written"):
        export_bundle(ckpt, tmp_path / "bundle", max_length=48)
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_runtime_truncates_and_counts(bert_bundle):
    clf = runtimes.load(bert_bundle[1])
    long_text = " ".join(WORDS * 2)  # 180 words, max length 48
    before = clf.stats.truncated
    clf.predict([long_text, "w1 w2"])
    assert clf.stats.truncated - before == 1


@pytest.mark.parametrize(
    "texts, message",
    [
        (["w1", ""], r"texts\[1\]: empty text"),
        (["w1", 3], r"texts\[1\]: expected a string, got int"),
        ("w1 w2", "got one string"),
    ],
)
def test_runtime_rejects_bad_texts(bert_bundle, texts, message):
    with pytest.raises(NanonetError, match=message):
        runtimes.load(bert_bundle[1]).predict(texts)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_tampered_byte_is_refused(bert_bundle, tmp_path):
    copy = _copy(bert_bundle[1], tmp_path)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(NanonetError, match=r"model.onnx: sha256 does not match"):
        runtimes.load(copy)


def test_missing_file_is_refused(bert_bundle, tmp_path):
    copy = _copy(bert_bundle[1], tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(NanonetError, match=r"tokenizer.json: missing from the bundle"):
        runtimes.load(copy)


def test_unknown_version_is_refused(bert_bundle, tmp_path):
    copy = _copy(bert_bundle[1], tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NanonetError, match="format version 2 is not supported"):
        runtimes.load(copy)


def test_runtime_runs_with_torch_blocked(bert_bundle):
    code = (
        "import sys; from nanonet import runtimes; clf = runtimes.load(sys.argv[1]); p = clf.predict(['w1 w2 w3', 'w40'])\n"
        "assert not any(m == 'torch' or m.startswith(('torch.', 'nanonet.model', 'nanonet.export')) for m in sys.modules)\n"
        "print(p[0].label, len(p))"
    )
    done = run_without(TRAINING_SIDE, code, str(bert_bundle[1]))
    assert done.returncode == 0, done.stderr
    label, n = done.stdout.split()
    assert label in LABELS and n == "2"


def _cli(*args: str, columns: int | None = None):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": str(columns)} if columns else None
    return subprocess.run([sys.executable, "-m", "nanonet", *args], capture_output=True, text=True, timeout=300, env=env)


def test_cli_predict_streams_a_file_and_reports_malformed_lines(bert_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "w1 w2"}\nnot json\n{"text": ""}\n{"other": 1}\n{"text": "w50 w51 w52"}\n')
    out = tmp_path / "out.jsonl"
    # A narrow terminal must not split a warning across lines: scripts grep stderr.
    done = _cli("predict", str(bert_bundle[1]), "--input", str(src), "--output", str(out), "--batch-size", "1", columns=40)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert [("error" in r) for r in rows] == [False, True, True, True, False]
    assert rows[4]["label"] in LABELS
    assert "line 2: not valid JSON" in done.stderr and "line 4: missing column 'text'" in done.stderr
    assert "2 predictions, 3 malformed lines" in done.stdout


def test_cli_predict_and_bench_json(bert_bundle, tmp_path):
    done = _cli("predict", str(bert_bundle[1]), "w1 w2", "w40 w41", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == ["w1 w2", "w40 w41"]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS) + "\n")
    done = _cli("bench", str(bert_bundle[1]), "--data", str(data), "--batch-sizes", "1,4", "--seconds", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["batch_size"] for r in result["results"]] == [1, 4]
    assert all(r["docs_per_second"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in result["results"])
    assert result["bundle_mb"] > 0 and result["peak_rss_mb"] > 0


def test_cli_predict_says_how_many_texts_were_truncated(bert_bundle, tmp_path):
    long = " ".join(WORDS[:80])  # past the bundle's 48 tokens
    done = _cli("predict", str(bert_bundle[1]), long, "w1 w2")
    assert done.returncode == 0, done.stderr
    assert "1 of 2 texts were cut to the bundle's 48 tokens" in done.stdout
    done = _cli("predict", str(bert_bundle[1]), long, "--json")
    assert len(done.stdout.splitlines()) == 1 and "1 of 1 texts were cut to the bundle's 48 tokens" in done.stderr
    data = tmp_path / "in.txt"
    data.write_text(f"{long}\nw1\n")
    done = _cli("predict", str(bert_bundle[1]), "--input", str(data), "--output", str(tmp_path / "out.jsonl"), "--json")
    assert json.loads(done.stdout)["truncated"] == 1


def test_validate_plot_without_matplotlib_is_refused_before_the_work(tmp_path):
    code = "import sys\nfrom nanonet.cli import main\nsys.argv = ['nanonet', *sys.argv[1:]]\nmain()\n"
    done = run_without(
        {"matplotlib"},
        code,
        "validate",
        str(tmp_path / "no-cand"),
        "--reference",
        str(tmp_path / "no-ref"),
        "--data",
        str(tmp_path / "none.jsonl"),
        "--plot",
        str(tmp_path / "p.png"),
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--plot needs the 'matplotlib' package" in done.stderr  # not the missing bundles: the extra is checked first


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "{missing}", "hello"], "not a bundle directory"),
        (["predict", "{bundle}"], "give texts as arguments or --input FILE"),
        (["bench", "{bundle}", "--data", "{bundle}/manifest.json", "--batch-sizes", "0"], "--batch-sizes"),
        (["export", "{missing}", "--out", "{tmp}/b"], "no such checkpoint directory"),
    ],
)
def test_cli_errors_are_one_line(bert_bundle, tmp_path, args, message):
    fill = {"missing": str(tmp_path / "nope"), "bundle": str(bert_bundle[1]), "tmp": str(tmp_path)}
    done = _cli(*(a.format(**fill) for a in args))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr
