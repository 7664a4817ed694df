"""The import graph keeps ARCHITECTURE.md's floors: no cycles (function-level imports
included), imports only go down, nothing imports the CLI, `nanonet.runtimes` imports
nothing else of nanonet, and `import nanonet` loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from import_graph import FLOORS, cycles, graph, part, part_graph

REPO = Path(__file__).resolve().parents[1]
EDGES = graph(REPO)


def test_the_graph_reads_every_module_and_its_imports():
    # a check that could pass on an empty graph would prove nothing
    assert {"nanonet.runtimes.bundle", "nanonet.train.trainer", "nanonet.export.tensorrt.engine", "nanonet.cli.train"} <= set(EDGES)
    assert "nanonet.train.selection" in EDGES["nanonet.train.trainer"]
    assert "nanonet.runtimes.errors" in EDGES["nanonet.model.checkpoint"]


def test_no_import_cycles():
    assert cycles(EDGES) == []
    assert cycles(part_graph(EDGES)) == []


def test_cycle_detection_finds_a_hidden_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_only_go_down():
    upward = {m: sorted(t for t in targets if FLOORS[part(t)] > FLOORS[part(m)]) for m, targets in EDGES.items()}
    assert {m: t for m, t in upward.items() if t} == {}


def test_an_upward_import_is_caught():
    assert FLOORS[part("nanonet.calibrate.quantize")] < FLOORS[part("nanonet.train.trainer")]
    assert FLOORS[part("nanonet.__main__")] == FLOORS[part("nanonet.cli.app")]  # the entry point is the CLI's


def test_nothing_imports_the_cli():
    importers = sorted(m for m, targets in EDGES.items() if part(m) != "nanonet.cli" and any(part(t) == "nanonet.cli" for t in targets))
    assert importers == []


def test_the_runtime_imports_nothing_else_of_nanonet():
    outside = {
        m: sorted(t for t in targets if part(t) != "nanonet.runtimes") for m, targets in EDGES.items() if part(m) == "nanonet.runtimes"
    }
    assert {m: t for m, t in outside.items() if t} == {}


def test_the_shared_pieces_live_once_at_the_bottom():
    assert not (REPO / "nanonet" / "errors.py").exists() and not (REPO / "nanonet" / "fsutil.py").exists()
    import nanonet
    from nanonet.runtimes.errors import NanonetError

    assert nanonet.NanonetError is NanonetError


def test_import_nanonet_loads_nothing_heavy(tmp_path):
    code = (
        "import sys, nanonet\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'onnxruntime', 'tokenizers', 'onnx', 'rich', 'typer'})\n"
        "print(heavy)"
    )
    # not from the repository root, whose nanonet/ folder lacks the runtimes/ that installs into
    # it: the installed package (editable or not; .ci/run also runs this with the base install)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
