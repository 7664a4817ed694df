"""Reading data, the label-scarce draw, tokenization and token-budget batches.

Torch-free: .ci/run runs this module in an environment with only the base install too
(no torch, no pyarrow), where the Parquet tests skip and the missing-pyarrow error runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from blocked_import import run_without
from conftest import write_tokenizer

from nanonet.data.splits import cap_unlabeled, hand_labeled, label_scarce, load_tables
from nanonet.data.tables import Table, iter_texts, join_tables, read_table
from nanonet.data.tokens import BatchStream, budget_batches, padding_share, tokenize
from nanonet.runtimes.errors import NanonetError

ROWS = [{"text": f"text number {i}", "label": "ab"[i % 2]} for i in range(10)]


def _write(path, rows, kind):
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind in ("csv", "tsv"):
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if kind == "tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv", "parquet"])
def test_every_format_reads_the_same(tmp_path, kind):
    if kind == "parquet":
        pytest.importorskip("pyarrow")  # the train extra brings it; the base install does not
    table = read_table(_write(tmp_path / f"d.{kind}", ROWS, kind))
    assert table.texts == [r["text"] for r in ROWS] and table.labels == [r["label"] for r in ROWS]


def test_custom_columns_and_unlabeled_text(tmp_path):
    rows = [{"body": r["text"], "y": r["label"]} for r in ROWS]
    table = read_table(_write(tmp_path / "d.jsonl", rows, "jsonl"), text_col="body", label_col="y")
    assert table.labels == [r["label"] for r in ROWS]
    (tmp_path / "u.txt").write_text("one\n\ntwo\n")
    assert read_table(tmp_path / "u.txt").texts == ["one", "two"]


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{broken\n', "row 3: not valid JSON"),
        ('{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n', "row 2: missing column 'text'"),
        ('{"text": "a", "label": "x"}\n{"text": "  ", "label": "y"}\n', "row 2: empty text"),
        ('{"text": "a", "label": "x"}\n{"text": "b"}\n', "row 2: missing label"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, content, message):
    path = tmp_path / "train.jsonl"
    path.write_text(content)
    with pytest.raises(NanonetError) as e:
        read_table(path, need_labels=True)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "a", "label": "x"}\n{broken\n', "row 2: not valid JSON"),
        ('{"text": "a"}\n{"body": "b"}\n', "row 2: missing column 'text'"),
        ('{"text": "a"}\n{"text": "  "}\n', "row 2: empty text"),
        ("", "no rows"),
    ],
)
def test_streamed_texts_give_the_same_errors(tmp_path, content, message):
    path = tmp_path / "pool.jsonl"
    path.write_text(content)
    with pytest.raises(NanonetError) as e:
        list(iter_texts(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv"])
def test_streamed_texts_match_the_table(tmp_path, kind):
    path = _write(tmp_path / f"d.{kind}", ROWS, kind)
    stream = iter_texts(path)
    assert next(stream) == ROWS[0]["text"]  # a generator: rows come one at a time
    assert [ROWS[0]["text"], *stream] == read_table(path).texts


def test_a_picked_row_not_yet_labeled_is_named(tmp_path):
    path = tmp_path / "to_label.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "label": "", "pool_row": 7}\n')
    with pytest.raises(NanonetError, match=r"to_label.jsonl: row 3: missing label in column 'label'"):
        read_table(path, need_labels=True)


def test_hand_labeled_rows_keep_their_uneven_classes():
    labeled = join_tables([Table("r1.jsonl", ["a1", "a2", "b1"], ["a", "a", "b"]), Table("r2.jsonl", ["a3", "c1"], ["a", "c"])])
    dev = Table("dev.jsonl", ["d1", "d2", "d3"], ["b", "z", "a"])
    splits = hand_labeled(labeled, ["a1", "u1", "b1", "u2"], dev, None)
    assert splits.labels == ["a", "b", "c"]
    assert splits.label_counts() == {"a": 3, "b": 1, "c": 1}
    assert splits.labeled_texts == ["a1", "a2", "b1", "a3", "c1"] and splits.labeled_ids == [0, 0, 1, 0, 2]
    assert splits.unlabeled_texts == ["u1", "u2"]  # the labeled texts left the pool
    assert splits.dev_ids == [1, -1, 0] and splits.unpredictable == ["z"]  # -1: no prediction can be right
    assert splits.summary()["label_counts"] == {"a": 3, "b": 1, "c": 1} and splits.summary()["source"] == "labeled file"
    assert splits.warnings == [
        "r1.jsonl + r2.jsonl: classes 'b', 'c' have one labeled row; it trains, but label more",
        "dev.jsonl: class 'z' is in no labeled row and cannot be predicted; its 1 rows count as errors",
    ]
    with pytest.raises(NanonetError, match="r1.jsonl: needs at least 2 classes, found 1"):
        hand_labeled(Table("r1.jsonl", ["a1", "a2"], ["a", "a"]), [])


def test_unreadable_files(tmp_path):
    with pytest.raises(NanonetError, match="no such file"):
        read_table(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(NanonetError, match="bin.jsonl: line 1: not UTF-8"):
        read_table(tmp_path / "bin.jsonl")
    with pytest.raises(NanonetError, match="unknown file type"):
        read_table(_write(tmp_path / "d.xml", ROWS, "jsonl"))


def test_corrupt_parquet_file(tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(NanonetError, match="x.parquet: not a readable Parquet file"):
        read_table(tmp_path / "x.parquet")


def test_parquet_without_pyarrow_names_the_install(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    code = (
        "import sys\nfrom nanonet.data.tables import read_table\nfrom nanonet.runtimes.errors import NanonetError\n"
        "try:\n    read_table(sys.argv[1])\nexcept NanonetError as e:\n    print(e)\n"
    )
    done = run_without({"pyarrow"}, code, str(tmp_path / "x.parquet"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'x.parquet'}: reading Parquet needs pyarrow (pip install 'nanonet[train]')"


def test_draw_is_exactly_n_per_class_and_seeded(tiny_data):
    tables = load_tables(str(tiny_data))
    a = label_scarce(tables, 5, seed=1)
    assert sorted(np.bincount(a.labeled_ids).tolist()) == [5, 5, 5]
    assert a.labels == ["alpha", "beta", "gamma"] and a.dev_source == "none"  # by default nothing is held for selection
    assert len(a.unlabeled_texts) == 3 * 40 - 15
    assert not set(a.labeled_texts) & set(a.unlabeled_texts)  # labels of the rest stay hidden
    b = label_scarce(tables, 5, seed=1)
    assert (a.labeled_texts, a.labeled_ids) == (b.labeled_texts, b.labeled_ids)
    c = label_scarce(tables, 5, seed=2)
    assert a.labeled_texts != c.labeled_texts


def test_dev_file_gives_at_most_n_per_class_for_selection(tiny_data):
    tables = load_tables(str(tiny_data))
    dev_file = list(zip(tables["dev"].texts, tables["dev"].labels))
    a = label_scarce(tables, 5, seed=1, dev_per_class=None)  # None: N per class
    assert a.dev_source == "dev" and a.dev_per_class == 5
    assert np.bincount(a.dev_ids).tolist() == [5, 5, 5]  # not the file's 8 per class
    names = [a.labels[i] for i in a.dev_ids]
    assert set(zip(a.dev_texts, names)) <= set(dev_file)  # rows of the dev file, labels kept
    assert a.summary()["labeled_seen"] == 15 + 15
    assert label_scarce(tables, 5, seed=1, dev_per_class=5).dev_texts == a.dev_texts
    assert label_scarce(tables, 5, seed=2, dev_per_class=5).dev_texts != a.dev_texts
    everything = label_scarce(tables, 5, seed=1, dev_per_class=100)  # more than the file holds: all of it
    assert sorted(everything.dev_texts) == sorted(t for t, _ in dev_file)
    # the training draw does not depend on how much of the dev file selection takes
    assert (everything.labeled_texts, everything.labeled_ids) == (a.labeled_texts, a.labeled_ids)


def test_dev_held_out_from_train_when_missing(tiny_data):
    (tiny_data / "dev.jsonl").unlink()
    s = label_scarce(load_tables(str(tiny_data)), 5, seed=1, dev_per_class=3)
    assert s.dev_source == "held out from train" and s.dev_per_class == 3
    assert sorted(np.bincount(s.dev_ids).tolist()) == [3, 3, 3]
    assert not set(s.dev_texts) & (set(s.unlabeled_texts) | set(s.labeled_texts))


def test_no_selection_labels_leaves_dev_empty_and_the_training_draw_as_it_was(tiny_data):
    tables = load_tables(str(tiny_data))
    with_dev = label_scarce(tables, 5, seed=1, dev_per_class=5)
    none = label_scarce(tables, 5, seed=1)  # the default holds none
    assert none.dev_per_class == 0
    assert (none.dev_texts, none.dev_ids, none.dev_source) == ([], [], "none")
    assert none.summary()["labeled_seen"] == 15  # the training labels alone
    assert (none.labeled_texts, none.labeled_ids) == (with_dev.labeled_texts, with_dev.labeled_ids)
    (tiny_data / "dev.jsonl").unlink()  # without a dev file nothing is held out of train either
    tables = load_tables(str(tiny_data))
    held = label_scarce(tables, 5, seed=1, dev_per_class=5)
    none = label_scarce(tables, 5, seed=1, dev_per_class=0)
    assert none.dev_texts == [] and none.labeled_texts == held.labeled_texts
    assert len(none.unlabeled_texts) == len(tables["train"].texts) - 15  # the rows selection would have held out stay in the pool
    assert set(held.dev_texts) <= set(none.unlabeled_texts)


def test_unlabeled_cap_draws_a_seeded_subset_in_pool_order(tiny_data):
    full = label_scarce(load_tables(str(tiny_data)), 5, seed=1)
    pool = full.unlabeled_texts
    capped = cap_unlabeled(full, 30, seed=1)
    assert len(capped.unlabeled_texts) == 30 and len(set(capped.unlabeled_texts)) == 30
    positions = [pool.index(t) for t in capped.unlabeled_texts]
    assert positions == sorted(positions)  # a subset of the pool, in its order
    assert capped.summary()["unlabeled"] == 30 and capped.summary()["unlabeled_available"] == len(pool)
    assert (capped.labeled_texts, capped.dev_texts) == (full.labeled_texts, full.dev_texts)  # only the pool changes
    assert cap_unlabeled(full, 30, seed=1).unlabeled_texts == capped.unlabeled_texts
    assert cap_unlabeled(full, 30, seed=2).unlabeled_texts != capped.unlabeled_texts
    assert cap_unlabeled(full, None, seed=1) is full and cap_unlabeled(full, len(pool), seed=1) is full
    assert full.summary()["unlabeled_available"] == len(pool)


def test_protocol_errors(tiny_data):
    tables = load_tables(str(tiny_data))
    with pytest.raises(NanonetError, match=r"train.jsonl: class 'alpha' has 40 examples, fewer than 41 labeled"):
        label_scarce(tables, 41, seed=1)
    with (tiny_data / "test.jsonl").open("a") as f:
        f.write(json.dumps({"text": "w1 w2", "label": "omega"}) + "\n")
    with pytest.raises(NanonetError, match=r"test.jsonl: row 37: label 'omega' does not occur in train"):
        label_scarce(load_tables(str(tiny_data)), 5, seed=1)
    with pytest.raises(NanonetError, match="no train file"):
        load_tables(str(tiny_data.parent))


def test_tokenize_truncates_and_caches(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "cache")
    write_tokenizer(tmp_path)
    texts = ["w1 w2 w3", " ".join(["w4"] * 50)]
    first = tokenize(texts, tmp_path / "tokenizer.json", max_length=16)
    assert first.lengths.tolist() == [5, 16]  # [CLS] w1 w2 w3 [SEP]; truncated to 16
    assert len(list((tmp_path / "cache").iterdir())) == 1
    again = tokenize(texts, tmp_path / "tokenizer.json", max_length=16)
    assert np.array_equal(first.ids, again.ids) and np.array_equal(first.offsets, again.offsets)
    tokenize(texts, tmp_path / "tokenizer.json", max_length=32)  # another key
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_rows_joined_equal_the_texts_tokenized_together(tmp_path, monkeypatch):
    monkeypatch.setattr("nanonet.data.tokens.CACHE_DIR", tmp_path / "cache")
    write_tokenizer(tmp_path)
    first, second = ["w1 w2 w3", "w4"], ["w2 w2", " ".join(["w3"] * 9), "w1"]
    joined = tokenize(first, tmp_path / "tokenizer.json", 8).then(tokenize(second, tmp_path / "tokenizer.json", 8))
    together = tokenize(first + second, tmp_path / "tokenizer.json", 8)
    assert np.array_equal(joined.ids, together.ids) and np.array_equal(joined.offsets, together.offsets)


def test_budget_batches_cover_every_row_once_within_budget():
    lengths = np.random.default_rng(0).integers(3, 120, size=500)
    for rng in (None, np.random.default_rng(1)):
        batches = budget_batches(lengths, 512, rng)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(500))
        assert all(lengths[b].sum() <= 512 or len(b) == 1 for b in batches)
    long = budget_batches(np.array([600, 10]), 512, None)
    assert [b.tolist() for b in long] == [[1], [0]]  # a row over the budget goes alone
    # bucketing by length keeps padding far below a random batch's
    shuffled = [np.arange(i, min(i + 16, 500)) for i in range(0, 500, 16)]
    assert padding_share(lengths, budget_batches(lengths, 512, np.random.default_rng(1))) < padding_share(lengths, shuffled) / 2


def test_batch_stream_is_seeded_and_indexable():
    lengths = np.random.default_rng(0).integers(3, 60, size=200)
    a, b = BatchStream(lengths, 256, seed=1, salt=2), BatchStream(lengths, 256, seed=1, salt=2)
    n = a.batches_per_epoch()
    assert np.array_equal(a[n + 3], b[n + 3])  # second epoch, computed fresh in b
    assert not np.array_equal(a[3], a[n + 3]) or len(a[3]) != len(a[n + 3])  # epochs reshuffle
    assert not all(np.array_equal(x, y) for x, y in zip(a.epoch(0), BatchStream(lengths, 256, 2, 2).epoch(0)))
