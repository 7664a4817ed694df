"""The VarlenAttention TensorRT plugin (IPluginV3 through TensorRT's Python plugin API,
`tensorrt.plugin`, TensorRT >= 10.8 for the ahead-of-time implementation).

Registered as "nanonet::VarlenAttention" (namespace "nanonet", version "1"): the ONNX
parser maps each VarlenAttention node of model.trt.onnx to it through the node's
`plugin_namespace` / `plugin_version` attributes; `num_heads`, `head_size`, `scale` and
`window` become plugin fields, and the node's `aot` attribute picks the implementation:

- AOT (the default): the Triton kernel compiled to PTX at build time
  (export/tensorrt/aot.py) and launched by TensorRT itself, so that, as TensorRT
  documents for AOT plugins, the engine runs without Python: trtexec, the C++ runtime,
  nanonet's runtime.
- JIT (development): the attention in torch on TensorRT's stream, one sequence at a
  time; the engine then needs this module registered in the process that runs it.

Written to the documented API; it needs TensorRT and a GPU, which this project's CI does
not have. What runs without them is tested: the AOT kernel's numerics in Triton's
interpreter with the arguments and grid TensorRT uses, and its PTX, compiled for sm_80,
sm_87 and sm_90 and assembled by ptxas (tests/test_tensorrt_aot.py).
"""

# No `from __future__ import annotations` here: tensorrt.plugin validates the registered
# functions' annotations as classes (issubclass), and postponed annotations are strings.
from nanonet.export.tensorrt.varlen_op import OP_TYPE, PLUGIN_NAMESPACE

PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{OP_TYPE}"
_REGISTERED = False
COMPILED: list[dict] = []  # a summary of each AOT kernel compiled in this process, for the build log


def register_plugin() -> None:
    """Register the plugin's description and both implementations (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import tensorrt as trt
    import tensorrt.plugin as trtp

    from nanonet.export.tensorrt.aot import compile_varlen_attention, launch_grid

    dtypes = {trt.float32: "float32", trt.float16: "float16", trt.bfloat16: "bfloat16"}

    @trtp.register(PLUGIN_ID)
    def _desc(
        qkv: trtp.TensorDesc,
        cu_seqlens: trtp.TensorDesc,
        max_seqlen: trtp.TensorDesc,
        num_heads: int,
        head_size: int,
        scale: float,
        window: int,
    ) -> trtp.TensorDesc:
        return trtp.from_shape_expr((qkv.shape_expr[0], num_heads * head_size), dtype=qkv.dtype)

    # BF16 is for the AOT kernel: the JIT path's tensors cannot be bfloat16 (no such type in
    # __cuda_array_interface__); the builder produces float16 and float32 graphs
    @trtp.autotune(PLUGIN_ID)
    def _types(
        qkv: trtp.TensorDesc, cu_seqlens: trtp.TensorDesc, max_seqlen: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16|BF16, INT32, INT32, FP32|FP16|BF16")]  # output type = qkv type

    @trtp.aot_impl(PLUGIN_ID)
    def _aot(
        qkv: trtp.TensorDesc,
        cu_seqlens: trtp.TensorDesc,
        max_seqlen: trtp.TensorDesc,
        num_heads: int,
        head_size: int,
        scale: float,
        window: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        kernel = compile_varlen_attention(dtypes[qkv.dtype], num_heads, head_size, scale, window, ptx_version=driver_ptx_version())
        grid = launch_grid(max_seqlen.shape_expr[0], cu_seqlens.shape_expr[0] - 1, num_heads, kernel.block_m, cdiv=trtp.cdiv)
        launch = trtp.KernelLaunchParams()
        launch.grid_x, launch.grid_y, launch.grid_z = grid
        launch.block_x = kernel.num_warps * 32
        launch.shared_mem = kernel.shared_mem
        COMPILED.append({**kernel.summary(), "dtype": dtypes[qkv.dtype], "window": window})
        return kernel.name.encode(), kernel.ptx.encode(), launch, trtp.SymIntExprs(0)  # no scalar arguments

    @trtp.impl(PLUGIN_ID)
    def _jit(
        qkv: trtp.Tensor,
        cu_seqlens: trtp.Tensor,
        max_seqlen: trtp.Tensor,
        num_heads: int,
        head_size: int,
        scale: float,
        window: int,
        outputs: tuple[trtp.Tensor],
        stream: int,
    ) -> None:
        import torch
        import torch.nn.functional as F

        from nanonet.model.attention import window_mask

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):  # all of it on TensorRT's stream, the offsets' read too
            x = torch.as_tensor(qkv, device="cuda")
            cu = torch.as_tensor(cu_seqlens, device="cuda").tolist()
            out = torch.as_tensor(outputs[0], device="cuda")
            T = x.shape[0]
            q, k, v = x.view(T, 3, num_heads, head_size).unbind(1)
            for s, e in zip(cu[:-1], cu[1:]):
                mask = window_mask(torch.arange(e - s, device=x.device), window)
                y = F.scaled_dot_product_attention(*(t[s:e].transpose(0, 1) for t in (q, k, v)), attn_mask=mask, scale=scale)
                out[s:e].copy_(y.transpose(0, 1).reshape(e - s, -1))

    _REGISTERED = True


def driver_ptx_version() -> int | None:
    """The highest PTX ISA this machine's CUDA driver loads (88 for 8.8), so that an AOT
    kernel is not emitted for a newer toolkit than the driver knows; None if unknown."""
    try:
        from cuda.bindings import driver
        from triton.backends.nvidia.compiler import ptx_get_version

        driver.cuInit(0)
        err, version = driver.cuDriverGetVersion()  # e.g. 12080 for CUDA 12.8
        return int(ptx_get_version(f"{version // 1000}.{version % 1000 // 10}")) if int(err) == 0 else None
    except Exception:  # noqa: BLE001 - cuda-python or Triton internals missing: let Triton choose
        return None
