"""The bundle: the one definition of what ships to a device.

A directory holding `manifest.json`, `model.onnx`, `tokenizer.json` (and, for TensorRT,
`model.trt.onnx` / `model.plan`). The manifest names the format and its version, the
labels, the tokenizer's max length, the pooling, the model's input and output names, the
precision, the sha256 and size of every file, and where the model came from.

Writing is atomic (a temporary directory renamed into place); reading refuses a format
or version it does not know, a missing file and a file whose hash does not match.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import atomic_dir

FORMAT = "nanonet-bundle"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Manifest:
    labels: list[str]
    max_length: int
    pooling: str  # "mean" | "cls"
    inputs: list[str]  # input_ids, attention_mask[, token_type_ids]
    outputs: list[str]  # logits, probs
    precision: str = "fp32"  # fp32 | int8 (dynamic/static) | mixed
    files: dict[str, dict] = field(default_factory=dict)  # name -> {"sha256", "bytes"}
    family: str = "bert"
    layers: dict = field(default_factory=dict)  # per layer: attention type, window, precision
    provenance: dict = field(default_factory=dict)  # checkpoint, training data hash, metrics
    export: dict = field(default_factory=dict)  # route, opset, verification figures
    quantization: dict = field(default_factory=dict)  # method, calibration, kept-float layers, census
    format: str = FORMAT
    format_version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out: str | Path, manifest: Manifest, files: dict[str, str | Path | bytes]) -> Path:
    """Write a bundle atomically: `files` maps a name in the bundle to a source path or bytes.

    The manifest's `files` entries are computed here, from what was written."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        manifest.files = {}
        for name, src in sorted(files.items()):
            dst = tmp / name
            if isinstance(src, bytes):
                dst.write_bytes(src)
            else:
                shutil.copyfile(src, dst)
            manifest.files[name] = {"sha256": sha256(dst), "bytes": dst.stat().st_size}
        (tmp / MANIFEST).write_text(manifest.to_json())
    return out


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise NanonetError(f"{self.path}: the bundle has no {name} (files: {', '.join(self.manifest.files)})")
        return self.path / name

    def read_bytes(self, name: str) -> bytes:
        """The bytes of a listed file, checked against the manifest's sha256 as they are read:
        what a runtime loads is what was verified (no second read that could differ)."""
        f = self.file(name)
        data = f.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.manifest.files[name].get("sha256"):
            raise _changed(f)
        return data

    @property
    def size_bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest.files.values())


def read_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle; every problem is a one-line NanonetError naming the file."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise NanonetError(f"{path}: not a bundle directory")
    if not mpath.is_file():
        raise NanonetError(f"{mpath}: missing (is {path} a bundle written by nanonet export?)")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NanonetError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise NanonetError(f"{mpath}: not a {FORMAT} manifest")
    if raw.get("format_version") != VERSION:
        raise NanonetError(f"{mpath}: format version {raw.get('format_version')!r} is not supported (this runtime reads {VERSION})")
    known = set(Manifest.__dataclass_fields__)
    try:
        manifest = Manifest(**{k: v for k, v in raw.items() if k in known})
    except TypeError as e:
        raise NanonetError(f"{mpath}: incomplete manifest ({e})") from None
    refuse_links(path)
    for name, meta in manifest.files.items():
        if not inside(path, name):
            # says nothing of what the entry points at, so a bundle cannot probe the machine
            raise NanonetError(f"{mpath}: file entry {name!r} is not a plain path inside the bundle; refused")
        f = path / name
        if not f.is_file():
            raise NanonetError(f"{f}: missing from the bundle")
        if verify and sha256(f) != meta.get("sha256"):
            raise _changed(f)
    return Bundle(path, manifest)


def _changed(f: Path) -> NanonetError:
    return NanonetError(f"{f}: sha256 does not match the manifest (the file was changed or damaged)")


def inside(bundle: Path, name: object) -> bool:
    """A manifest entry names a file inside the bundle: a relative path, no '..', no
    backslash or NUL, and resolving under the bundle directory."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    rel = Path(name)
    if rel.is_absolute() or rel.drive or any(part in ("..", "") for part in rel.parts):
        return False
    root = bundle.resolve()
    return (root / rel).resolve().is_relative_to(root)


def refuse_links(bundle: Path) -> None:
    """A bundle holds no symbolic links (one could make the runtime read outside it); the
    bundle directory itself may be one, as a `latest` link to a release often is."""
    for p in bundle.rglob("*"):
        if p.is_symlink():
            raise NanonetError(f"{bundle}: {p.relative_to(bundle).as_posix()!r} is a symbolic link; bundles may not hold links")
