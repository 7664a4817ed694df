"""Reading the files a model is made of: a bad file is a one-line error that names it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nanonet.runtimes.errors import NanonetError


def read_json(path: Path) -> dict:
    """A JSON file's content; a missing or malformed file is a NanonetError naming it."""
    if not path.is_file():
        raise NanonetError(f"{path}: missing file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NanonetError(f"{path}: not valid JSON ({e})") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file; a truncated or corrupt file is a one-line error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise NanonetError(f"{path}: missing file")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NanonetError(f"{path}: corrupt or truncated safetensors file ({reason})") from None
