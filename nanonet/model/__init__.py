"""The packed NanoNet encoder and the ways to load, slice and save it.

Needs torch (the `train` extra); importing this package without it raises a
NanonetError that names the install command.
"""

from nanonet.extras import require

require("torch", "nanonet's model")

from nanonet.model.attention import BACKENDS, pick_backend  # noqa: E402
from nanonet.model.checkpoint import (  # noqa: E402
    Checkpoint,
    is_checkpoint,
    load_checkpoint,
    make_student,
    save_checkpoint,
)
from nanonet.model.config import EncoderConfig, alternating  # noqa: E402
from nanonet.model.encoder import NanoClassifier, NanoEncoder, pool  # noqa: E402
from nanonet.model.hf import DEFAULT_TEACHER, Pretrained, load_pretrained  # noqa: E402
from nanonet.model.packing import Packed, pack_padded, pack_sequences, pad, unpad  # noqa: E402

__all__ = [
    "BACKENDS",
    "DEFAULT_TEACHER",
    "Checkpoint",
    "EncoderConfig",
    "NanoClassifier",
    "NanoEncoder",
    "Packed",
    "Pretrained",
    "alternating",
    "is_checkpoint",
    "load_checkpoint",
    "load_pretrained",
    "make_student",
    "pack_padded",
    "pack_sequences",
    "pad",
    "pick_backend",
    "pool",
    "save_checkpoint",
    "unpad",
]
