"""Optional dependencies: import them late and say which `pip install` fixes a miss."""

from __future__ import annotations

import importlib
from types import ModuleType

from nanonet.runtimes.errors import NanonetError

# module -> the extra that carries it
EXTRA_OF = {
    "torch": "train",
    "transformers": "train",
    "safetensors": "train",
    "datasets": "train",
    "huggingface_hub": "train",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime_extensions": "export",
    "tensorrt": "trt",
    "matplotlib": "plot",
    "flash_attn": "gpu",
}


def install_hint(module: str) -> str:
    extra = EXTRA_OF.get(module)
    if extra is None:
        return f"pip install {module}"
    if extra == "train":  # torch first, pinned, so pip takes the CPU build already on the machine
        return "pip install torch==2.13.0 && pip install 'nanonet[train]'"
    return f"pip install 'nanonet[{extra}]'"


def require(module: str, purpose: str = "this command") -> ModuleType:
    """Import `module` or raise a NanonetError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NanonetError(f"{purpose} needs the '{module}' package ({e}); install it with: {install_hint(module)}") from None
