"""A training run's directory: what `--out` may already hold (no torch here, so the CLI
checks it before loading anything).

A fresh run writes into an empty or missing directory; a directory holding a previous
run's resume state takes `--resume`; any other non-empty directory takes `--overwrite`,
which replaces what a run writes there (its state first, so no stale state can be
resumed) and leaves every other file alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nanonet.runtimes.errors import NanonetError

# --overwrite removes these before the run; its other outputs (student/, teacher/,
# report.json) are replaced as it writes them, and files of the user's stay
STALE_ON_A_FRESH_RUN = ("state", "adapted_teacher.safetensors")  # resumable leftovers of the run replaced


def check_out_dir(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """A one-line error unless `out` may take this run; nothing is written or removed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NanonetError(f"--out {out}: exists and is not a directory")
    if resume:
        if not (out / "state" / "state.json").is_file():
            raise NanonetError(f"--resume: {out} holds no saved state to continue (it is written every --eval-every steps)")
        return
    if not out.is_dir() or not any(out.iterdir()):
        return
    if overwrite:
        return
    if (out / "state").exists():
        raise NanonetError(
            f"{out}: holds a previous run's state; pass --resume to continue it, --overwrite to start over, or choose another --out"
        )
    held = sorted(p.name for p in out.iterdir())
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    raise NanonetError(f"{out}: not empty (holds {shown}); choose another --out, or pass --overwrite to replace a run's outputs there")


def clear_stale_state(out: str | Path) -> None:
    """With --overwrite, before a fresh run starts: the replaced run's resume state goes, so
    a later --resume cannot continue it with this run's settings."""
    for name in STALE_ON_A_FRESH_RUN:
        p = Path(out) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
