"""Atomic writes (defined in runtimes, which a device installs without nanonet's core)."""

from runtimes.fsutil import atomic_dir, atomic_write_text

__all__ = ["atomic_dir", "atomic_write_text"]
