"""Every code block in README.md runs as written: the command-line quickstart on the real
default teacher and the bundled ag_news sample, then each Python block on what it wrote.

The set-up block (`make ...`, `pip install ...`) is what `.ci/run` itself runs."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", (REPO / "README.md").read_text(), re.S | re.M)
SETUP = ("make", "pip")


def commands(block: str) -> list[list[str]]:
    """A shell block's commands: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


SHELL = [cmd for lang, block in BLOCKS if lang == "bash" for cmd in commands(block)]
PYTHON = [block for lang, block in BLOCKS if lang == "python"]


def test_readme_has_the_blocks_this_test_runs():
    assert {lang for lang, _ in BLOCKS} <= {"bash", "python", "text"}
    assert len(PYTHON) >= 2 and sum(cmd[0] == "nanonet" for cmd in SHELL) >= 6
    assert all(cmd[0] in ("nanonet", *SETUP) for cmd in SHELL), [cmd for cmd in SHELL if cmd[0] not in ("nanonet", *SETUP)]
    assert ["make", "test"] in SHELL  # the test command .ci/run calls


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory like a fresh clone's root for the quickstart: data/ from the repo."""
    root = tmp_path_factory.mktemp("readme")
    (root / "data").symlink_to(REPO / "data")
    return root


@pytest.fixture(scope="module")
def quickstart(workdir) -> Path:
    """Run the README's `nanonet` commands in order, as a user would."""
    pytest.importorskip("torch")
    env = {**os.environ, "NANONET_NO_PROGRESS": "1"}
    for cmd in (c for c in SHELL if c[0] == "nanonet"):
        done = subprocess.run(
            [sys.executable, "-m", "nanonet", *cmd[1:]], capture_output=True, text=True, timeout=1800, cwd=workdir, env=env
        )
        if "--trt" in cmd and importlib.util.find_spec("tensorrt") is None:
            # as the README says: the packed graph is written, no engine here, exit code 2
            assert done.returncode == 2, done.stderr[-2000:]
            assert "model.trt.onnx" in done.stderr and "nanonet engine" in done.stderr
            assert (workdir / cmd[cmd.index("--out") + 1] / "model.trt.onnx").is_file()
            continue
        assert done.returncode == 0, f"{shlex.join(cmd)}\n{done.stderr[-3000:]}"
    return workdir


@pytest.mark.slow
def test_cli_quickstart_runs_as_written(quickstart):
    assert (quickstart / "runs/demo/student/model.safetensors").is_file()
    for bundle in ("runs/demo/bundle", "runs/demo/bundle-int8"):
        assert (quickstart / bundle / "manifest.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_block_runs_as_written(quickstart, index):
    done = subprocess.run([sys.executable, "-c", PYTHON[index]], capture_output=True, text=True, timeout=600, cwd=quickstart)
    assert done.returncode == 0, f"README Python block {index + 1}:\n{PYTHON[index]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_the_model_block_packs_real_tokens_only(quickstart):
    """all-MiniLM-L6-v2's tokenizer.json pads to 128: packing its padded output would give
    (256, 384) for the block's two texts. The block must print the real token count."""
    from tokenizers import Tokenizer

    from nanonet.model.hf import DEFAULT_TEACHER, resolve

    (block,) = [b for b in PYTHON if "teacher.pack(" in b]
    texts = ast.literal_eval(re.search(r"teacher\.pack\((\[.*?\])\)", block).group(1))
    tok = Tokenizer.from_file(str(resolve(DEFAULT_TEACHER) / "tokenizer.json"))
    assert tok.padding is not None and tok.padding["length"] == 128  # the trap is real
    tok.no_padding()
    real = sum(len(e.ids) for e in tok.encode_batch(texts))
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=600, cwd=quickstart)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"torch.Size([{real}, 384])" in done.stdout
