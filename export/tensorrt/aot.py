"""The varlen attention kernel compiled ahead of time, for the AOT VarlenAttention plugin.

An engine built with the AOT implementation carries the kernel as PTX and launches it
itself, so it runs without Python (trtexec, the C++ runtime, a Jetson). TensorRT calls
the kernel with the plugin's buffers in order (inputs qkv, cu_seqlens, max_seqlen, then
the output) and the scalar arguments the plugin declares in between (none here), and it
does not store the plugin's attributes: scale, window and the shapes are compiled in as
constants (`triton_varlen.varlen_attention_aot`). One kernel per (dtype, heads, head
size, scale, window): a 6-layer model with global and local layers needs two.

Compiling needs Triton but no GPU: give a target (`GPUTarget("cuda", 87, 32)` for Jetson
Orin) to compile for a device that is not here; the tests do so on a CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRITON_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
MAX_STATIC_SHARED = 48 * 1024  # a launch above this needs an opt-in attribute the engine does not set


@dataclass(frozen=True)
class AotKernel:
    name: str  # the PTX entry point
    ptx: str
    num_warps: int
    shared_mem: int  # bytes of dynamic shared memory per program
    block_m: int  # queries per program: the grid's x extent is ceil(max_seqlen / block_m)
    target: str  # e.g. "sm_87"
    ptx_isa: str  # the PTX ISA version: the device's driver must be new enough to load it

    def summary(self) -> dict:
        return {
            "kernel": self.name,
            "target": self.target,
            "ptx_isa": self.ptx_isa,
            "num_warps": self.num_warps,
            "shared_mem": self.shared_mem,
            "block_m": self.block_m,
        }


def launch_grid(max_seqlen, batch, num_heads: int, block_m: int, cdiv=lambda a, b: (a + b - 1) // b) -> tuple:
    """(x, y, z) programs: query blocks of the longest sequence, sequences, heads. The plugin
    passes TensorRT's symbolic shapes and `trtp.cdiv`; the tests pass ints."""
    return cdiv(max_seqlen, block_m), batch, num_heads


# tile sizes tried in order: (queries, keys, pipeline stages); the first that fits a plain
# launch's shared memory wins (float32 and heads of 128 need the smaller ones)
TILES = ((64, 64, 2), (32, 32, 2), (32, 32, 1), (16, 16, 1))


def compile_varlen_attention(
    dtype: str, num_heads: int, head_size: int, scale: float, window: int, target=None, ptx_version: int | None = None
) -> AotKernel:
    """PTX of the AOT kernel for one attention configuration, with the largest tiles that
    fit (TILES).

    `target`: a triton GPUTarget, or None for the GPU of this process. `ptx_version`: the
    highest PTX ISA to emit (88 for 8.8), for a driver older than Triton's own toolkit."""
    for block_m, block_n, stages in TILES:
        try:
            return compile_tiles(dtype, num_heads, head_size, scale, window, target, ptx_version, block_m, block_n, 4, stages)
        except SharedMemoryTooLarge as e:
            last = e
    raise last


class SharedMemoryTooLarge(ValueError):
    pass


def compile_tiles(
    dtype: str,
    num_heads: int,
    head_size: int,
    scale: float,
    window: int,
    target=None,
    ptx_version: int | None = None,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
) -> AotKernel:
    """PTX of the AOT kernel with the given tiles; refuses a kernel TensorRT could not launch as is."""
    import triton
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    from nanonet.export.tensorrt.triton_varlen import HEAD_SIZES, varlen_attention_aot

    if not isinstance(varlen_attention_aot, JITFunction):
        raise RuntimeError("the varlen kernel was loaded in Triton's interpreter (TRITON_INTERPRET=1); compile it in a process without it")

    if dtype not in TRITON_DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported (supported: {', '.join(TRITON_DTYPES)})")
    if head_size not in HEAD_SIZES:
        raise ValueError(f"head size {head_size} not supported (supported: {HEAD_SIZES})")
    t = TRITON_DTYPES[dtype]
    constants = {
        "SCALE": float(scale),
        "WINDOW": int(window),
        "HIDDEN": num_heads * head_size,
        "HEAD": head_size,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "WINDOWED": window >= 0,
        "IEEE": dtype == "float32",
    }
    signature = {"QKV": f"*{t}", "CU": "*i32", "MAX_SEQLEN": "*i32", "OUT": f"*{t}", **{k: "constexpr" for k in constants}}
    src = ASTSource(fn=varlen_attention_aot, signature=signature, constexprs=constants)
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    compiled = triton.compile(src, target=target, options=options)
    meta = compiled.metadata
    scratch = (getattr(meta, "global_scratch_size", 0) or 0, getattr(meta, "profile_scratch_size", 0) or 0)
    if any(scratch):
        raise ValueError(f"{meta.name}: needs scratch memory ({scratch[0]} + {scratch[1]} bytes), which TensorRT does not pass")
    ptx = drop_unused_params(compiled.asm["ptx"], meta.name, keep=4)
    kernel = AotKernel(meta.name, ptx, meta.num_warps, meta.shared, block_m, _ptx_target(ptx), _ptx_isa(ptx))
    check_launchable(kernel)
    return kernel


def drop_unused_params(ptx: str, name: str, keep: int) -> str:
    """The PTX with the entry point's parameters after the first `keep` removed.

    Triton appends two pointer parameters to every kernel (global and profile scratch
    buffers); TensorRT launches with the plugin's own arguments only, so with them the
    kernel would read arguments that were never passed. They are removed when the body
    never reads them (no scratch is needed), and kept, to fail the check, otherwise."""
    m = re.search(rf"(\.entry\s+{re.escape(name)}\s*\()(.*?)(\))", ptx, re.S)
    if m is None:
        raise ValueError(f"no entry point {name} in the PTX")
    params = [p.strip() for p in m.group(2).split(",") if p.strip()]
    extra = [re.search(r"(\S+)$", p).group(1) for p in params[keep:]]
    body = ptx[m.end() :]
    if not extra or any(re.search(rf"(?<![\w$.]){re.escape(e)}(?![\w$])", body) for e in extra):
        return ptx
    block = "\n\t" + ",\n\t".join(params[:keep]) + "\n"
    return ptx[: m.start(2)] + block + ptx[m.end(2) :]


def check_launchable(kernel: AotKernel) -> None:
    """What TensorRT's launch assumes of the kernel: exactly the plugin's four buffers as
    parameters (qkv, cu_seqlens, max_seqlen, output), no scalar ones, and shared memory a
    launch gets without an opt-in."""
    params = entry_params(kernel.ptx, kernel.name)
    if params != ["u64"] * 4:
        raise ValueError(f"{kernel.name}: expected the 4 pointer parameters TensorRT passes, got {params}")
    if kernel.shared_mem > MAX_STATIC_SHARED:
        raise SharedMemoryTooLarge(f"{kernel.name}: needs {kernel.shared_mem} bytes of shared memory, over {MAX_STATIC_SHARED}")


def entry_params(ptx: str, name: str) -> list[str]:
    """The PTX types of an entry point's parameters, in order ("u64" for a pointer)."""
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise ValueError(f"no entry point {name} in the PTX")
    return re.findall(r"\.param\s+\.(\w+)", m.group(1))


def _ptx_target(ptx: str) -> str:
    m = re.search(r"^\.target\s+(\w+)", ptx, re.M)
    return m.group(1) if m else "?"


def _ptx_isa(ptx: str) -> str:
    m = re.search(r"^\.version\s+([\d.]+)", ptx, re.M)
    return m.group(1) if m else "?"
