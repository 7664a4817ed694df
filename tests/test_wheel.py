"""The wheel, installed into a fresh virtual environment: one top-level package
(`nanonet`), no generic `export` / `calibrate` / `runtimes` modules, and a runtime that
runs a bundle with torch and nanonet's training side unimportable."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from blocked_import import BLOCKER, TRAINING_SIDE

REPO = Path(__file__).resolve().parents[1]


def _setuptools_builds_here() -> bool:
    """setuptools new enough for pyproject's build-system: then the wheel builds without
    fetching a build environment."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _setuptools_builds_here() else []  # else pip fetches setuptools
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = out.glob("nanonet-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with only the wheel installed (--no-deps); the runtime's
    dependencies (numpy, tokenizers, onnxruntime) come from this environment's
    site-packages through a .pth line, after the venv's own, so nanonet resolves to the wheel."""
    venv = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    site = Path(
        subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    )
    (site / "zz_runtime_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(python: Path, code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # -I: no script directory, no PYTHONPATH, no user site; cwd outside the source tree
    return subprocess.run([str(python), "-I", "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_wheel_installs_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"nanonet", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for sub in ("runtimes", "calibrate", "export", "export/tensorrt", "cli", "model", "train", "data"):
        assert f"nanonet/{sub}/__init__.py" in names, sub
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["nanonet"]


@pytest.mark.parametrize("generic", ["export", "calibrate", "runtimes"])
def test_generic_top_level_names_are_not_installed(fresh_venv, generic, tmp_path):
    done = _run(fresh_venv, f"import {generic}", cwd=tmp_path)
    assert done.returncode != 0 and f"No module named '{generic}'" in done.stderr
    done = _run(fresh_venv, f"import nanonet.{generic}, sys; print(nanonet.{generic}.__file__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert str(fresh_venv.parents[1]) in done.stdout  # the wheel's copy, not the source tree


def test_installed_runtime_runs_a_bundle_with_torch_blocked(fresh_venv, tmp_path, tiny_bert_dir):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    import torch

    from nanonet.export.bundle import export_bundle
    from nanonet.model import NanoClassifier, load_pretrained, save_checkpoint

    torch.manual_seed(0)
    src = load_pretrained(str(tiny_bert_dir))
    ckpt = save_checkpoint(tmp_path / "ckpt", NanoClassifier(src.encoder, 2, src.pooling), ["no", "yes"], src.path)
    export_bundle(ckpt, tmp_path / "bundle", max_length=32)
    code = BLOCKER.format(blocked=TRAINING_SIDE) + (
        "import sys\n"
        "from nanonet import runtimes\n"
        "preds = runtimes.load(sys.argv[1]).predict(['w1 w2 w3', 'w40 w41'])\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
        "print(runtimes.__file__); print(len(preds), sorted({p.label for p in preds} | {'no', 'yes'}))\n"
    )
    done = _run(fresh_venv, code, str(tmp_path / "bundle"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, result = done.stdout.strip().splitlines()
    assert str(fresh_venv.parents[1]) in where
    assert result == "2 ['no', 'yes']"
