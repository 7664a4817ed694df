"""The Typer CLI: --help, --version, info as a table and as JSON, and one-line errors.

.ci/run also runs this module with only the base install: --help and --version run there,
the tests of `info` (which needs torch) skip."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from nanonet import __version__

# `nanonet info` loads models with torch (the train extra); the base install lacks it
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the train extra)")


def nanonet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nanonet", *args], capture_output=True, text=True, timeout=300)


def test_help_and_version():
    done = nanonet("--help")
    assert done.returncode == 0 and "info" in done.stdout
    done = nanonet("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"nanonet {__version__}"


@needs_torch
def test_info_default_teacher_student_json():
    done = nanonet("info", "sentence-transformers/all-MiniLM-L6-v2", "--layers", "0,2,4", "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["family"] == "bert"
    assert facts["layers"] == [0, 2, 4] and facts["num_layers"] == 3
    assert (facts["hidden_size"], facts["num_heads"], facts["vocab_size"], facts["max_length"]) == (384, 12, 30522, 256)
    assert [a["type"] for a in facts["attention"]] == ["global"] * 3
    # all-MiniLM-L6-v2 has 22.7M parameters with its pooler; without it and with 3 of 6 layers:
    per_layer = 4 * 384 * 384 + 4 * 384 + 2 * 384 * 1536 + 1536 + 384 + 4 * 384
    embeddings = (30522 + 512 + 2) * 384 + 2 * 384
    assert facts["parameters"] == embeddings + 3 * per_layer
    assert facts["bias_parameters"] == 384 + 3 * (4 * 384 + 1536 + 384 + 2 * 384)
    assert facts["backends"][0] == {"device": "cpu", "dtype": "float32", "backend": "sdpa"}


@needs_torch
def test_info_table_modernbert_alternating(tiny_modernbert_dir):
    done = nanonet("info", str(tiny_modernbert_dir))
    assert done.returncode == 0, done.stderr
    assert "modernbert" in done.stdout
    assert "0:global  1:local(8)  2:local(8)  3:global" in done.stdout
    done = nanonet("info", str(tiny_modernbert_dir), "--global-every", "2", "--local-window", "16", "--json")
    assert [a["window"] for a in json.loads(done.stdout)["attention"]] == [None, 16, None, 16, None, 16]


@needs_torch
@pytest.mark.parametrize(
    "args,line",
    [
        (["info", "/no/such/dir"], "error: /no/such/dir: no such directory, and not a hub id"),
        (
            ["info", "all-MiniLM-L6-v2", "--layers", "0,x"],
            "error: --layers: expected comma-separated layer numbers such as 0,2,4, got '0,x'",
        ),
        (["info", "all-MiniLM-L6-v2", "--layers", "0,6"], "error: --layers: layer 6 out of range for a 6-layer model"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args, line):
    done = nanonet(*args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [line], done.stderr


@needs_torch
def test_info_on_corrupt_checkpoint(tmp_path, tiny_bert_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    done = nanonet("info", str(broken))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{broken / 'model.safetensors'}: corrupt or truncated" in done.stderr


@pytest.mark.parametrize(
    "args,line",
    [
        (["predict", "no-bundle", "x", "--batch-size", "0"], "error: --batch-size: must be >= 1, got 0"),
        (["predict", "no-bundle", "--input", "."], "error: .: is a directory, not a file"),
        (["predict", "no-bundle", "--input", "missing.jsonl"], "error: missing.jsonl: no such file"),
    ],
)
def test_predict_refuses_bad_flags_before_loading_the_bundle(args, line, tmp_path):
    done = subprocess.run([sys.executable, "-m", "nanonet", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [line], done.stderr
