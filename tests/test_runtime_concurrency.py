"""One Classifier shared by many threads: each thread's probabilities equal a serial run's
(ONNX Runtime sessions and tokenizers may be called concurrently; the runtime keeps no
per-call state between the tokenizer and the session)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from nanonet import runtimes

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

THREADS = 8


def test_eight_threads_sharing_a_classifier_get_the_serial_results(tiny_bundle):
    clf = runtimes.load(tiny_bundle, threads=1)
    rng = np.random.default_rng(0)
    # each thread its own texts, of lengths that make different batch shapes
    jobs = [[" ".join(f"w{w}" for w in rng.integers(1, 90, rng.integers(1, 40))) for _ in range(50)] for _ in range(THREADS)]
    serial = [clf.predict_proba(texts, batch_size=7) for texts in jobs]
    results: list[np.ndarray | None] = [None] * THREADS
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(5):
                results[i] = clf.predict_proba(jobs[i], batch_size=7)
                np.testing.assert_array_equal(results[i], serial[i])
        except BaseException as e:  # noqa: BLE001 - reported below, with the thread's index
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[0]
    assert all(r is not None for r in results)
