"""The VarlenAttention TensorRT plugin (IPluginV3 through TensorRT's Python plugin API,
`tensorrt.plugin`, TensorRT >= 10.7).

Registered as "nanonet::VarlenAttention" (namespace "nanonet", version "1"): the ONNX
parser maps each VarlenAttention node of model.trt.onnx to it through the node's
`plugin_namespace` / `plugin_version` attributes; `num_heads`, `head_size`, `scale` and
`window` become plugin fields.

Implementation here: the JIT (development) path, which runs the attention with torch on
TensorRT's CUDA stream, one sequence at a time, honouring the window. The ahead-of-time
Triton kernel (engines that run without Python) is not written yet.

Written to the documented API; it needs TensorRT and a GPU, which this project's CI does
not have, so it has not run here.
"""

from __future__ import annotations

from export.tensorrt.varlen_op import OP_TYPE, PLUGIN_NAMESPACE

PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{OP_TYPE}"
_REGISTERED = False


def register_plugin(log=print) -> str:
    """Register the plugin with TensorRT (once per process); returns which attention the
    engine will use, for the build log."""
    global _REGISTERED
    import tensorrt as trt
    import tensorrt.plugin as trtp

    if not _REGISTERED:

        @trtp.register(PLUGIN_ID)
        def _desc(qkv: trtp.TensorDesc, cu_seqlens: trtp.TensorDesc, max_seqlen: trtp.TensorDesc, num_heads: int, head_size: int,
                  scale: float, window: int) -> trtp.TensorDesc:  # fmt: skip
            return trtp.from_shape_expr((qkv.shape_expr[0], num_heads * head_size), dtype=qkv.dtype)

        @trtp.impl(PLUGIN_ID)
        def _impl(qkv: trtp.Tensor, cu_seqlens: trtp.Tensor, max_seqlen: trtp.Tensor, num_heads: int, head_size: int, scale: float,
                  window: int, outputs: tuple[trtp.Tensor], stream: int) -> None:  # fmt: skip
            import torch
            import torch.nn.functional as F

            x = torch.as_tensor(qkv, device="cuda")
            cu = torch.as_tensor(cu_seqlens, device="cuda").tolist()
            out = torch.as_tensor(outputs[0], device="cuda")
            T = x.shape[0]
            q, k, v = x.view(T, 3, num_heads, head_size).unbind(1)
            with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
                for s, e in zip(cu[:-1], cu[1:]):
                    mask = None
                    if window >= 0:
                        pos = torch.arange(e - s, device=x.device)
                        mask = (pos[:, None] - pos[None, :]).abs() <= window
                    y = F.scaled_dot_product_attention(*(t[s:e].transpose(0, 1) for t in (q, k, v)), attn_mask=mask, scale=scale)
                    out[s:e].copy_(y.transpose(0, 1).reshape(e - s, -1))

        _REGISTERED = True
    major = int(trt.__version__.split(".")[0])
    choice = f"plugin {PLUGIN_ID} (JIT)"
    log(f"TensorRT {trt.__version__}: attention through {choice}" + ("; the native attention layer of TensorRT >= 11 is not used yet" if major >= 11 else ""))
    return choice
