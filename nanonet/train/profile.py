"""Where a run's time and memory go: seconds per phase, resident memory now and at its peak.

Linux keeps a process's peak resident memory (VmHWM in /proc/self/status) and lets the
process reset it (writing 5 to /proc/self/clear_refs), so each run in a benchmark process
reports its own peak, not the largest of the runs before it. Elsewhere the figures are None.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

STATUS = Path("/proc/self/status")


def _status_mb(key: str) -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Resident memory of this process now, in MiB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """Peak resident memory since the last `reset_peak_rss`, in MiB."""
    return _status_mb("VmHWM")


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class Phases:
    """Seconds spent in each named phase, summed over repeats: `with phases("eval"): ...`."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextmanager
    def __call__(self, name: str):
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - tic

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.seconds.items()}
