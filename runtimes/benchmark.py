"""`bench_bundle`: documents per second and latency percentiles of a bundle per batch size,
end to end (tokenization, bucketing, the model), plus load time, peak memory and size."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nanonet.runtimes.classifier import load


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    On Linux from VmHWM: ru_maxrss survives exec, so a child started by a big parent
    would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def bench_bundle(
    path: str | Path,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    threads: int | None = None,
    backend: str = "auto",
    seconds: float = 5.0,
    max_docs: int = 4096,
    on_size: Callable[[int], None] | None = None,
) -> dict:
    """Time `predict_proba` calls of each batch size over `texts` (cycled in their order).

    Each size runs one warm-up call, then calls until `seconds` have passed or `max_docs`
    documents were classified, whichever is first (at least 3 calls)."""
    tic = time.perf_counter()
    clf = load(path, backend, threads)
    load_s = time.perf_counter() - tic
    texts = list(texts)
    rows = []
    for b in batch_sizes:
        clf.predict_proba(texts[:b], b)  # warm-up: first-call allocations are not the steady state
        clf.stats.reset()
        latencies, docs, i, start = [], 0, 0, time.perf_counter()
        while len(latencies) < 3 or (time.perf_counter() - start < seconds and docs < max_docs):
            batch = [texts[(i + j) % len(texts)] for j in range(b)]
            i += b
            t0 = time.perf_counter()
            clf.predict_proba(batch, b)
            latencies.append(time.perf_counter() - t0)
            docs += b
        lat = np.asarray(latencies) * 1000
        rows.append(
            {
                "batch_size": b,
                "calls": len(latencies),
                "docs": docs,
                "docs_per_second": docs / float(np.sum(latencies)),
                "p50_ms": float(np.percentile(lat, 50)),
                "p95_ms": float(np.percentile(lat, 95)),
                "p99_ms": float(np.percentile(lat, 99)),
                "overhead_share": clf.stats.overhead_share,
                "truncated": clf.stats.truncated,
            }
        )
        if on_size:
            on_size(b)
    return {
        "bundle": str(path),
        "backend": clf.backend_name,
        "threads": threads,
        "precision": clf.bundle.manifest.precision,
        "load_seconds": load_s,
        "peak_rss_mb": peak_rss_mb(),
        "bundle_mb": clf.bundle.size_bytes / 1e6,
        "texts": len(texts),
        "results": rows,
    }
