"""Run a Python snippet in a subprocess where some modules cannot be imported, as on a
device that installed only the base package. A blocked name blocks its submodules too:
blocking 'nanonet.model' blocks 'nanonet.model.encoder', not 'nanonet.runtimes'."""

from __future__ import annotations

import subprocess
import sys

# Everything a device does without: torch and the layers above the runtime.
TRAINING_SIDE = {
    "torch",
    "transformers",
    "safetensors",
    "nanonet.model",
    "nanonet.data",
    "nanonet.train",
    "nanonet.calibrate",
    "nanonet.export",
    "nanonet.cli",
}

BLOCKER = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + '.') for b in {blocked!r}):
            raise ModuleNotFoundError(f"No module named '{{name}}' (blocked)")
sys.meta_path.insert(0, _Block())
"""


def run_without(blocked: set[str], code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` (with sys.argv = ['-c', *args]) with `blocked` modules unimportable."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER.format(blocked=blocked) + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
