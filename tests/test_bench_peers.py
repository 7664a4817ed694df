"""The label-scarce benchmark's peers train on nanonet's own labeled rows for a seed."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture()
def bench_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("label_scarce", "peers", "_paths"):
        sys.modules.pop(name, None)
    return importlib.import_module("label_scarce"), importlib.import_module("peers")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "token-cache")


def test_peer_rows_are_the_runs_labeled_rows(bench_modules, tiny_data, tiny_bert_dir, tmp_path):
    pytest.importorskip("torch")
    from test_train import tiny_args

    from nanonet.data.splits import label_scarce, load_tables
    from nanonet.train import train

    bench, peers = bench_modules
    report = train(tiny_args(tiny_data, tmp_path / "run", tiny_bert_dir, steps=2, eval_every=2), progress=False)
    args = report["settings"]
    splits = label_scarce(load_tables(str(tiny_data)), args["labels_per_class"], args["seed"], None, args["dev_per_class"])
    rows = bench.peer_rows(splits)
    # the run's own digest of its labeled rows, recomputed here from the rows the peers get
    classes = sorted({r["label"] for r in rows})
    h = hashlib.sha256()
    for r in rows:
        h.update(r["text"].encode() + f"\0{classes.index(r['label'])}\0".encode())
    assert h.hexdigest() == report["data"]["labeled_sha256"]
    # and what the peer script reads back from the file it is given hashes as the benchmark expects
    path = bench.write_jsonl(tmp_path / "labeled.jsonl", rows)
    read = peers.read_rows(path)
    assert [(t, label) for t, label in read] == [(r["text"], r["label"]) for r in rows]
    assert peers.labeled_sha256(read) == bench.rows_sha256(rows)
    # with the selection rows: the same rows first, then every dev row the run selected on
    both = bench.peer_rows(splits, with_selection=True)
    assert both[: len(rows)] == rows and len(both) == len(rows) + report["data"]["dev"]


def test_another_seed_gives_the_peers_other_rows(bench_modules, tiny_data):
    from nanonet.data.splits import label_scarce, load_tables

    bench, _ = bench_modules
    tables = load_tables(str(tiny_data))
    a, b = (bench.rows_sha256(bench.peer_rows(label_scarce(tables, 4, seed))) for seed in (1, 2))
    assert a != b
