"""The device side stays torch-free: `nanonet.runtimes` imports with torch (and nanonet's
other layers) blocked, and so does the CLI's help."""

from __future__ import annotations

from blocked_import import TRAINING_SIDE, run_without


def test_runtimes_imports_without_torch():
    done = run_without(TRAINING_SIDE, "import nanonet.runtimes, sys; assert 'torch' not in sys.modules; print('ok')")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_blocker_really_blocks():
    done = run_without({"torch"}, "import torch")
    assert done.returncode != 0 and "blocked" in done.stderr


def test_cli_help_without_torch():
    done = run_without({"torch", "transformers", "safetensors"}, "from nanonet.cli import main; main()", "--help")
    assert done.returncode == 0, done.stderr
    assert "info" in done.stdout


def test_command_needing_a_missing_extra_names_the_install():
    done = run_without({"torch"}, "from nanonet.cli import main; main()", "info", "all-MiniLM-L6-v2")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install torch==2.13.0 && pip install 'nanonet[train]'" in lines[0]
