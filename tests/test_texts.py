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
