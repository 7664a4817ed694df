"""nanonet checkpoints (a directory, written atomically) and students built by layer selection.

CHECKPOINT/
  config.json        {"format": "nanonet-checkpoint", "format_version": 1,
                      "encoder": EncoderConfig, "pooling": ..., "num_labels": ...}
  model.safetensors  the NanoClassifier state dict
  tokenizer.json     the fast tokenizer (plus tokenizer_config.json etc. when present)
  labels.json        ["label 0", "label 1", ...]
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from nanonet.model.config import EncoderConfig
from nanonet.model.encoder import NanoClassifier, NanoEncoder
from nanonet.model.files import read_json, read_safetensors
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import atomic_dir

FORMAT = "nanonet-checkpoint"
FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "labels.json")


def make_student(encoder: NanoEncoder, layers: list[int], global_every: int | None = None, local_window: int | None = None) -> NanoEncoder:
    """A new encoder holding copies of the embeddings, the selected layers (in the given
    order) and the final norm of `encoder`: one "model view" of the method.

    Each layer keeps its attention type unless `global_every` / `local_window` set a new
    pattern for the student."""
    cfg = encoder.config.select_layers(layers).with_attention(global_every, local_window)
    student = NanoEncoder(cfg, attention=encoder.attention)
    source = encoder.state_dict()
    state = {}
    for name in student.state_dict():
        if name.startswith("layers."):
            _, j, rest = name.split(".", 2)
            state[name] = source[f"layers.{layers[int(j)]}.{rest}"].clone()
        else:
            state[name] = source[name].clone()
    student.load_state_dict(state)
    return student.train(encoder.training)


@dataclass
class Checkpoint:
    model: NanoClassifier
    labels: list[str]
    path: Path

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"


def is_checkpoint(path: Path) -> bool:
    """True when `path` is a nanonet checkpoint directory (not a Hugging Face one)."""
    try:
        return json.loads((path / "config.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def save_checkpoint(path: str | Path, model: NanoClassifier, labels: list[str], tokenizer_dir: Path, extra: dict | None = None) -> Path:
    """Write a checkpoint directory atomically: build it beside the target, then rename.

    An existing checkpoint at `path` is replaced only once the new one is complete."""
    from safetensors.torch import save_file

    path = Path(path)
    if len(labels) != model.head.out_features:
        raise NanonetError(f"{path}: {len(labels)} labels for a head with {model.head.out_features} outputs")
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise NanonetError(f"{tokenizer_dir}: missing tokenizer.json")
    with atomic_dir(path) as tmp:
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "encoder": model.config.to_dict(),
            "pooling": model.pooling,
            "num_labels": len(labels),
            "classifier_dropout": model.drop.p,
            **(extra or {}),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "labels.json").write_text(json.dumps(list(labels), indent=2, ensure_ascii=False) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": FORMAT})
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, tmp / name)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint` (eval mode, on the CPU)."""
    path = Path(path)
    if not path.is_dir():
        raise NanonetError(f"{path}: no such checkpoint directory")
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise NanonetError(f"{path / name}: missing file")
    config = read_json(path / "config.json")
    if config.get("format") != FORMAT:
        raise NanonetError(f'{path / "config.json"}: not a nanonet checkpoint (no "format": "{FORMAT}")')
    if config.get("format_version") != FORMAT_VERSION:
        raise NanonetError(
            f"{path / 'config.json'}: unknown format_version {config.get('format_version')!r} (this nanonet reads {FORMAT_VERSION})"
        )
    cfg = EncoderConfig.from_dict(config.get("encoder") or {}, source=str(path / "config.json"))
    labels = read_json(path / "labels.json")
    if not isinstance(labels, list) or len(labels) != config.get("num_labels"):
        raise NanonetError(f"{path / 'labels.json'}: expected a list of {config.get('num_labels')} labels")
    try:
        model = NanoClassifier(cfg, len(labels), config.get("pooling", "mean"), config.get("classifier_dropout", 0.1))
    except ValueError as e:
        raise NanonetError(f"{path / 'config.json'}: {e}") from None
    weights = path / "model.safetensors"
    state = read_safetensors(weights)
    expected = model.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise NanonetError(f"{weights}: weights do not match config.json (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise NanonetError(f"{weights}: weight {k} has shape {tuple(v.shape)}, config.json implies {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    return Checkpoint(model.eval(), [str(x) for x in labels], path)
