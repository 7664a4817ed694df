"""Calibration texts as graph inputs, and graphs run over them with ONNX Runtime.

Texts are tokenized as the runtime tokenizes them and grouped in length order (short with
short), padded for model.onnx or packed for model.trt.onnx. The same batches feed the
quantizer's calibration (`CalibrationReader`) and the agreement checks (`probabilities`,
runtimes.metrics.agreement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanonet.runtimes.backends import ort_options
from nanonet.runtimes.classifier import Classifier, length_batches, pad_rows, softmax
from nanonet.runtimes.tensorrt import pack

PACKED_INPUTS = ["input_ids", "cu_seqlens", "max_seqlen"]


def padded_batches(clf: Classifier, texts: list[str], batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """model.onnx's feeds for `texts`: `batch_size` texts a batch in length order, each
    padded to its own longest text."""
    ids = [e.ids for e in clf.tokenizer.encode_batch(texts)]
    return [clf.pad([ids[i] for i in rows]) for rows in length_batches([len(x) for x in ids], batch_size=batch_size)]


def packed_batches(tokenizer, texts: list[str], max_tokens: int = 1024) -> list[dict[str, np.ndarray]]:
    """model.trt.onnx's feeds for `texts` (tokenized as the runtime does), in length order,
    about `max_tokens` tokens a batch: input_ids [T], cu_seqlens [B+1], max_seqlen [S]."""
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    batches = []
    for rows in length_batches([len(x) for x in ids], max_tokens=max_tokens):
        input_ids, cu_seqlens, longest = pack(pad_rows([ids[i] for i in rows]))
        batches.append({"input_ids": input_ids, "cu_seqlens": cu_seqlens, "max_seqlen": np.zeros(longest, dtype=np.int32)})
    return batches


def calibration_reader(batches: list[dict[str, np.ndarray]], names: list[str]):
    """ONNX Runtime's CalibrationDataReader over `batches` (the `names` inputs of each)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {n: b[n] for n in names}

        def rewind(self):
            self.it = iter(batches)

    return Reader()


def probabilities(path: Path, batches: list[dict[str, np.ndarray]], names: list[str], threads: int | None = None) -> np.ndarray:
    """(N, C) softmax of the graph's logits over `batches`, rows in batch order."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), ort_options(threads), providers=["CPUExecutionProvider"])
    return softmax(np.concatenate([s.run(["logits"], {n: b[n] for n in names})[0] for b in batches]))
