"""Streaming text records (runtimes/texts.py): every input line gives one record, malformed
ones carry an error naming what is wrong, and the stream goes on."""

from __future__ import annotations

import pytest

from nanonet.calibrate.data import sample_texts
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.texts import iter_records


def test_csv_quoted_newlines_and_bad_rows(tmp_path):
    f = tmp_path / "in.csv"
    f.write_text('text,label\n"two\nlines",a\nplain,b\nonly-one-cell\n"",c\n')
    recs = list(iter_records(f, label_col="label"))
    assert [r.line for r in recs] == [1, 2, 3, 4]
    assert recs[0].text == "two\nlines" and recs[0].label == "a"
    assert recs[1].text == "plain" and recs[1].error is None
    assert recs[2].error == "1 cells for 2 columns"
    assert recs[3].error == "empty text"


def test_tsv_and_text_files(tmp_path):
    tsv = tmp_path / "in.tsv"
    tsv.write_text("id\ttext\n1\thello world\n")
    assert [r.text for r in iter_records(tsv)] == ["hello world"]
    txt = tmp_path / "in.txt"
    txt.write_text("first\n\nthird\n")
    recs = list(iter_records(txt))
    assert [(r.line, r.text, r.error) for r in recs] == [(1, "first", None), (2, None, "empty line"), (3, "third", None)]


def test_jsonl_non_string_text(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": 5}\n[1, 2]\n{"text": "ok"}\n')
    recs = list(iter_records(f))
    assert recs[0].error == "text is int, not a string" and recs[1].error == "not a JSON object" and recs[2].text == "ok"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("in.csv", "a,b\n1,2\n", "no column 'text' in the header"),
        ("in.xml", "<x/>", "unknown file type '.xml'"),
    ],
)
def test_file_level_errors(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(NanonetError, match=message):
        list(iter_records(f))


def test_sampling_is_seeded_and_bounded(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("".join(f"text {i}\n" for i in range(100)))
    a, b, c = sample_texts(f, 10, seed=1), sample_texts(f, 10, seed=1), sample_texts(f, 10, seed=2)
    assert a == b and a != c and len(a) == 10 and len(set(a)) == 10
    everything = sample_texts(f, 500)
    assert sorted(everything) == sorted(f"text {i}" for i in range(100))
    # shuffled: the held-out half of a short, sorted file is not its first half
    assert everything[:50] != [f"text {i}" for i in range(50)]


BOM = "\ufeff"


@pytest.mark.parametrize(
    "name, content",
    [("in.csv", "text,label\nhello,a\n"), ("in.tsv", "text\tlabel\nhello\ta\n"), ("in.jsonl", '{"text": "hello", "label": "a"}\n')],
)
def test_a_byte_order_mark_is_read_past(tmp_path, name, content):
    from nanonet.data.tables import read_table

    f = tmp_path / name
    f.write_bytes((BOM + content).encode("utf-8"))
    assert [(r.text, r.label) for r in iter_records(f, label_col="label")] == [("hello", "a")]
    table = read_table(f, need_labels=True)
    assert (table.texts, table.labels) == (["hello"], ["a"])


def _with_bad_byte_on_line(path, lines: list[str], bad: int) -> None:
    data = [line.encode() for line in lines]
    data[bad - 1] = data[bad - 1][:-1] + b"\xff\n"
    path.write_bytes(b"".join(data))


@pytest.mark.parametrize("name", ["in.txt", "in.jsonl"])
def test_a_bad_byte_is_an_error_record_on_its_own_line_and_the_rest_is_read(tmp_path, name):
    lines = [(f'{{"text": "t{i}"}}' if name.endswith("jsonl") else f"t{i}") + "\n" for i in range(1, 13)]
    f = tmp_path / name
    _with_bad_byte_on_line(f, lines, 10)
    recs = list(iter_records(f))
    assert [r.line for r in recs if r.error] == [10]
    assert recs[9].error.startswith("not UTF-8 text (invalid start byte at byte")
    assert [r.text for r in recs if not r.error] == [f"t{i}" for i in range(1, 13) if i != 10]


def test_a_bad_byte_names_its_line_in_csv_and_training_files(tmp_path):
    from nanonet.data.tables import read_table

    lines = ["text,label\n"] + [f"t{i},a\n" for i in range(1, 12)]
    f = tmp_path / "in.csv"
    _with_bad_byte_on_line(f, lines, 10)
    with pytest.raises(NanonetError, match=r"in.csv: line 10: not UTF-8 text"):
        list(iter_records(f))
    with pytest.raises(NanonetError, match=r"in.csv: line 10: not UTF-8 text"):
        read_table(f)
    g = tmp_path / "train.jsonl"
    _with_bad_byte_on_line(g, [f'{{"text": "t{i}", "label": "a"}}\n' for i in range(1, 13)], 10)
    with pytest.raises(NanonetError, match=r"train.jsonl: line 10: not UTF-8 text"):
        read_table(g)


def test_invalid_json_gives_the_column(tmp_path):
    from nanonet.data.tables import read_table

    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "ok"}\n{"text": "tab\there"}\n')
    assert list(iter_records(f))[1].error == "not valid JSON (Invalid control character at column 14)"
    with pytest.raises(NanonetError, match=r"row 2: not valid JSON \(Invalid control character at column 14\)"):
        read_table(f, label_col=None)


def test_a_directory_is_named_as_one(tmp_path):
    from nanonet.data.tables import read_table

    (tmp_path / "d.jsonl").mkdir()
    for read in (lambda p: list(iter_records(p)), read_table):
        with pytest.raises(NanonetError, match=r"d.jsonl: is a directory, not a file$"):
            read(tmp_path / "d.jsonl")
