"""A stand-in for TensorRT's compiled module, just enough for its Python plugin package.

The `tensorrt-cu12-bindings` wheel carries `tensorrt_bindings/plugin/` (the code behind
`tensorrt.plugin`: registration, signature validation, autotune parsing) as plain Python;
only its `tensorrt.so` needs TensorRT's libraries. `plugin_package()` imports that
real package against this module, so the signature checks a test runs are NVIDIA's own.

Only what the package touches when it is imported and when a plugin registers is here:
the logger, the data-type, tensor-format, plugin-field and dimension-operation enums, the
interface classes its own classes derive from, plugin fields and a plugin registry that
records what is registered (`standin.registry.creators`).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import importlib.util
import sys
import types
from pathlib import Path


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def log(self, severity: int, message: str) -> None:
        pass


DataType = enum.IntEnum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 FP8 BF16 INT64 INT4 FP4 E8M0")
TensorFormat = enum.IntEnum("TensorFormat", "LINEAR CHW2 HWC8 CHW4 CHW16 CHW32 DHWC8 CDHW32 HWC DLA_LINEAR DLA_HWC4 HWC16 DHWC")
PluginFieldType = enum.IntEnum("PluginFieldType", "FLOAT16 FLOAT32 FLOAT64 INT8 INT16 INT32 CHAR DIMS UNKNOWN BF16 INT64 FP8 INT4 FP4")
DimensionOperation = enum.IntEnum("DimensionOperation", "SUM PROD MAX MIN SUB EQUAL LESS FLOOR_DIV CEIL_DIV")
QuickPluginCreationRequest = enum.IntEnum("QuickPluginCreationRequest", "UNKNOWN PREFER_JIT PREFER_AOT STRICT_JIT STRICT_AOT")


class _Interface:
    """TensorRT's interface classes: the package derives from them and calls their __init__."""

    def __init__(self, *args, **kwargs):
        pass


INTERFACES = (
    "IPluginV3 IPluginV3QuickCore IPluginV3QuickBuild IPluginV3QuickRuntime IPluginV3QuickAOTBuild "
    "IPluginCreatorV3Quick ISymExpr IDimensionExpr IExprBuilder ITensor PluginTensorDesc DynamicPluginTensorDesc"
).split()


class Dims(_Interface):
    MAX_DIMS = 8


class PluginField:
    def __init__(self, name: str, data=None, type: PluginFieldType = PluginFieldType.UNKNOWN):
        self.name, self.data, self.type = name, data, type


class PluginFieldCollection(list):
    pass


class PluginRegistry:
    def __init__(self):
        self.creators: dict[tuple[str, str, str], object] = {}

    def register_creator(self, creator, namespace: str) -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = ""):
        return self.creators.get((name, version, namespace))


def make_module() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.Logger = Logger
    for e in (DataType, TensorFormat, PluginFieldType, DimensionOperation, QuickPluginCreationRequest):
        setattr(trt, e.__name__, e)
    trt.float32, trt.float16, trt.bfloat16 = DataType.FLOAT, DataType.HALF, DataType.BF16
    trt.int8, trt.int32, trt.int64, trt.bool = DataType.INT8, DataType.INT32, DataType.INT64, DataType.BOOL
    for name in INTERFACES:
        setattr(trt, name, type(name, (_Interface,), {}))
    trt.Dims, trt.PluginField, trt.PluginFieldCollection = Dims, PluginField, PluginFieldCollection
    trt.registry = PluginRegistry()
    trt.get_plugin_registry = lambda: trt.registry
    return trt


def bindings_plugin_dir() -> Path | None:
    """`tensorrt_bindings/plugin/` of the installed bindings wheel (found, never imported)."""
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(next(iter(spec.submodule_search_locations))) / "plugin"
    return plugin if (plugin / "_validate.py").is_file() else None


def _tensorrt_modules() -> list[str]:
    return [m for m in sys.modules if m == "tensorrt" or m.startswith("tensorrt.")]


@contextlib.contextmanager
def plugin_package():
    """Install the stand-in as `tensorrt` and import the wheel's package as `tensorrt.plugin`;
    yields (tensorrt, tensorrt.plugin) and restores `sys.modules` afterwards."""
    plugin_dir = bindings_plugin_dir()
    assert plugin_dir is not None, "tensorrt-cu12-bindings is not installed"
    saved = {m: sys.modules.pop(m) for m in _tensorrt_modules()}
    trt = make_module()
    trt.__path__ = [str(plugin_dir.parent)]  # `tensorrt.plugin` resolves to the wheel's own package
    sys.modules["tensorrt"] = trt
    try:
        trt.plugin = importlib.import_module("tensorrt.plugin")
        yield trt, trt.plugin
    finally:
        for m in _tensorrt_modules():
            del sys.modules[m]
        sys.modules.update(saved)
