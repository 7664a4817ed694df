"""Run a Python snippet in a subprocess where some top-level modules cannot be imported,
as on a device that installed only the base package."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named '{{name}}' (blocked)")
sys.meta_path.insert(0, _Block())
"""


def run_without(blocked: set[str], code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` (with sys.argv = ['-c', *args]) with `blocked` modules unimportable."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER.format(blocked=blocked) + code, *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
