"""`nanonet select` and `nanonet train --labeled` end to end on a tiny random teacher: the
file a person labels, the round after it, and a run from classes of uneven sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_synthetic_data

TINY_RUN = ["--steps", "4", "--eval-every", "2", "--contrastive-steps", "2"]


def nanonet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nanonet", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def pool(tmp_path) -> tuple[Path, list[dict]]:
    data = write_synthetic_data(tmp_path / "data", {"train": 30})
    rows = read_jsonl(data / "train.jsonl")
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    return path, rows


def test_cold_start_writes_the_file_to_label(pool, tiny_bert_dir, tmp_path):
    path, rows = pool
    out = tmp_path / "to_label.jsonl"
    done = nanonet("select", "--pool", str(path), "--budget", "9", "--out", str(out), "--teacher", str(tiny_bert_dir), "--json")
    assert done.returncode == 0, done.stderr
    picks = read_jsonl(out)
    assert len(picks) == 9 and len({p["pool_row"] for p in picks}) == 9
    for p in picks:
        assert p["label"] == "" and p["text"] == rows[p["pool_row"] - 1]["text"]  # pool_row counts data rows from 1
    summary = json.loads(done.stdout)
    assert summary["picked"] == 9 and summary["pool_texts"] == 90 and summary["strategy"].startswith("cold start")
    assert summary["precision"] == "int8"  # the default on a CPU

    again = tmp_path / "again.jsonl"
    assert nanonet("select", "--pool", str(path), "--budget", "9", "--out", str(again), "--teacher", str(tiny_bert_dir)).returncode == 0
    assert again.read_text() == out.read_text()  # deterministic for a seed

    refused = nanonet("select", "--pool", str(path), "--budget", "9", "--out", str(out), "--teacher", str(tiny_bert_dir))
    assert refused.returncode == 1 and "exists" in refused.stderr and read_jsonl(out) == picks  # labels in it are not lost


@pytest.mark.parametrize(
    "args, line",
    [
        (["--budget", "0"], "error: --budget: must be >= 1, got 0"),
        (["--budget", "500"], "error: --budget 500: {pool} holds 90 texts, fewer than the budget"),
        (["--budget", "3", "--labeled", "{tmp}/missing.jsonl"], "error: --labeled {tmp}/missing.jsonl: no such file"),
        (["--budget", "3", "--precision", "int4"], "error: --precision: must be one of int8, fp32, got 'int4'"),
    ],
)
def test_bad_select_input_is_one_line(pool, tiny_bert_dir, tmp_path, args, line):
    path, _ = pool
    args = [a.format(tmp=tmp_path) for a in args]
    done = nanonet("select", "--pool", str(path), "--out", str(tmp_path / "o.jsonl"), "--teacher", str(tiny_bert_dir), *args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == line.format(pool=path, tmp=tmp_path)
    assert not (tmp_path / "o.jsonl").exists()


def test_train_from_uneven_labels_then_a_next_round(pool, tiny_bert_dir, tmp_path):
    path, rows = pool
    want = {"alpha": 6, "beta": 3, "gamma": 1}
    labeled, taken = [], set()
    for i, r in enumerate(rows):
        if sum(x["label"] == r["label"] for x in labeled) < want[r["label"]]:
            labeled.append({"text": r["text"], "label": r["label"], "pool_row": i + 1})
            taken.add(i + 1)
    lab = tmp_path / "labeled.jsonl"
    lab.write_text("".join(json.dumps(r) + "\n" for r in labeled))
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows[60:72]))
    dev.write_text(dev.read_text() + json.dumps({"text": "w1 w2 w3", "label": "delta"}) + "\n")  # a class no labeled row names
    run = tmp_path / "run"
    args = ["--labeled", str(lab), "--unlabeled", str(path), "--dev", str(dev), "--test", str(dev), "--out", str(run)]
    done = nanonet("train", *args, "--teacher", str(tiny_bert_dir), *TINY_RUN, "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert f"warning: {lab}: class 'gamma' has one labeled row" in done.stderr
    assert f"warning: {dev}: class 'delta' is in no labeled row and cannot be predicted; its 1 rows count as errors" in done.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["data"]["label_counts"] == want
    assert report["data"]["labels"] == ["alpha", "beta", "gamma"]
    assert report["data"]["unpredictable_classes"] == ["delta"]
    assert report["data"]["unlabeled"] == 90 - 10  # the labeled texts left the pool
    assert report["teacher"]["test"]["n"] == 13 and report["teacher"]["test"]["accuracy"] <= 12 / 13

    out = tmp_path / "next.jsonl"
    done = nanonet(
        "select", "--pool", str(path), "--budget", "5", "--model", str(run / "student"), "--labeled", str(lab), "--out", str(out), "--json"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["committee"] == 2 and summary["already_labeled"] == 10  # RUN/teacher joined the student
    picks = read_jsonl(out)
    assert len(picks) == 5 and not {p["pool_row"] for p in picks} & taken
    assert all(0 <= p["uncertainty"] <= 1 for p in picks)


def test_train_without_a_dev_file_keeps_the_final_states(pool, tiny_bert_dir, tmp_path):
    path, rows = pool
    lab = tmp_path / "labeled.jsonl"
    lab.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows[:6]))
    run = tmp_path / "run"
    done = nanonet("train", "--labeled", str(lab), "--unlabeled", str(path), "--out", str(run), "--teacher", str(tiny_bert_dir), *TINY_RUN)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["data"]["dev_source"] == "none" and report["teacher"]["dev"]["accuracy"] is None
    assert all(record["dev"] == {} for record in report["history"])


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--data", "{tmp}/d", "--labeled", "{tmp}/l.jsonl"],
            "error: give --data (N labels per class drawn from its train file) or --labeled FILE (your labeled rows), one of the two",
        ),
        ([], "error: give --data (N labels per class drawn from its train file) or --labeled FILE (your labeled rows), one of the two"),
    ],
)
def test_train_takes_data_or_labeled(tmp_path, args, line):
    done = nanonet("train", "--out", str(tmp_path / "r"), *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 1 and done.stderr.strip() == line
