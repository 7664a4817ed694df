"""Fill ./wheels with what `make gpu-check` installs on a machine without internet: the
train and export extras' dependencies and pytest, resolved from this environment, as
binary wheels for linux x86_64, without torch and what comes with a CUDA torch (nvidia-*,
triton) or TensorRT, which the GPU machine brings.

    python bench/wheels.py [--python-version 3.11] [--out wheels]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64", "linux_x86_64")
BROUGHT_BY_THE_MACHINE = re.compile(r"^(torch|triton|nvidia-.*|tensorrt.*|cuda-.*)$")


def closure(roots: list[str], extras_of_project: list[str]) -> dict[str, str]:
    """{distribution: installed version} of everything `roots` need here, transitively."""
    env = default_environment()
    seen: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    project = metadata.distribution("nanonet")
    for extra in extras_of_project:
        todo += [r for r in map(Requirement, project.requires or []) if r.marker and r.marker.evaluate({**env, "extra": extra})]
    todo += [r for r in map(Requirement, project.requires or []) if not r.marker]
    while todo:
        req = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen or BROUGHT_BY_THE_MACHINE.match(name):
            continue
        dist = metadata.distribution(req.name)
        seen[name] = dist.version
        for sub in map(Requirement, dist.requires or []):
            if sub.marker is None or sub.marker.evaluate({**env, "extra": ""}):
                todo.append(sub)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    ap.add_argument("--out", type=Path, default=ROOT / "wheels")
    args = ap.parse_args()
    pins = closure(["pytest", "setuptools>=77"], ["train", "export"])
    args.out.mkdir(exist_ok=True)
    reqs = args.out / "requirements.txt"
    reqs.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    cmd += ["--python-version", args.python_version, "-d", str(args.out), "-r", str(reqs)]
    subprocess.run(cmd, check=True)
    size = sum(p.stat().st_size for p in args.out.glob("*.whl")) / 2**20
    print(f"{args.out}: {len(pins)} distributions, {size:.0f} MiB (listed in {reqs.name})")


if __name__ == "__main__":
    main()
