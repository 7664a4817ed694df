"""Nothing already written is lost: `nanonet train` refuses a non-empty --out that is not its
own state (before it loads anything), --overwrite replaces only a run's outputs, and work
directories beside a target go away on errors, on SIGTERM, and after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanonet.rundir import check_out_dir, clear_stale_state
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import work_dir


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_an_empty_or_missing_out_takes_a_fresh_run(tmp_path):
    check_out_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty")


def test_a_non_empty_out_is_refused_with_what_it_holds(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "student").mkdir()
    with pytest.raises(NanonetError, match=r"not empty \(holds report.json, student\); choose another --out, or pass --overwrite"):
        check_out_dir(tmp_path)


def test_a_previous_runs_state_asks_for_resume_or_overwrite(tmp_path):
    (tmp_path / "state").mkdir()
    with pytest.raises(NanonetError, match="holds a previous run's state; pass --resume to continue it, --overwrite to start over"):
        check_out_dir(tmp_path)
    with pytest.raises(NanonetError, match=r"--resume: .* holds no saved state to continue"):
        check_out_dir(tmp_path, resume=True)  # a state directory without its state.json
    (tmp_path / "state" / "state.json").write_text("{}")
    check_out_dir(tmp_path, resume=True)


def test_a_file_as_out_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NanonetError, match="exists and is not a directory"):
        check_out_dir(tmp_path / "f", overwrite=True)


def test_overwrite_clears_only_the_replaced_runs_resume_state(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text("{}")
    (tmp_path / "adapted_teacher.safetensors").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "report.json").write_text("{}")
    check_out_dir(tmp_path, overwrite=True)
    clear_stale_state(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "report.json"]  # the rest is replaced as the run writes it


def test_cli_train_refuses_before_loading_anything(tmp_path):
    """The refusal comes first: a teacher and data that do not exist are never reached."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": true}\n')
    (out / "student").mkdir()
    (out / "student" / "model.safetensors").write_bytes(b"weights")
    before = _files(out)
    cmd = [
        sys.executable,
        "-m",
        "nanonet",
        "train",
        "--data",
        str(tmp_path / "no-data"),
        "--out",
        str(out),
        "--teacher",
        str(tmp_path / "no-teacher"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not empty (holds report.json, student)" in lines[0] and "Traceback" not in done.stderr
    assert _files(out) == before


def test_a_work_directory_is_removed_on_an_error(tmp_path):
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError), work_dir(target, "export") as work:
        (work / "big.onnx").write_bytes(b"x" * 1000)
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_a_work_directory_is_removed_on_sigterm(tmp_path):
    target = tmp_path / "bundle"
    code = (
        "import sys, time\n"
        "from nanonet.cli import _exit_on_signal\n"
        "import signal; signal.signal(signal.SIGTERM, _exit_on_signal)\n"
        "from nanonet.runtimes.fsutil import work_dir\n"
        f"with work_dir({str(target)!r}, 'export') as w:\n"
        "    (w / 'part.onnx').write_bytes(b'x')\n"
        "    print(w, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    work = Path(proc.stdout.readline().strip())
    assert work.is_dir() and work.parent == tmp_path
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not work.exists()


def test_a_work_directory_left_by_a_killed_process_is_removed_next_time(tmp_path):
    target = tmp_path / "bundle"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".bundle.export-{dead.pid}"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"x" * 100)
    alive = tmp_path / f".bundle.export-{os.getppid()}"  # a live process's: kept
    alive.mkdir()
    with work_dir(target, "export") as work:
        assert work.name == f".bundle.export-{os.getpid()}"
    assert not stale.exists() and alive.exists()


def test_sigkilled_work_is_cleaned_by_the_next_export_style_run(tmp_path):
    """The whole story: a process SIGKILLed inside work_dir leaves its directory; the next one removes it."""
    target = tmp_path / "bundle"
    code = f"import time\nfrom nanonet.runtimes.fsutil import work_dir\nwith work_dir({str(target)!r}, 'export') as w:\n    print(w, flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    work = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert work.is_dir()  # SIGKILL runs no cleanup
    with work_dir(target, "export"):
        pass
    assert not work.exists()
