"""`nanonet export` and `nanonet engine`: bundles, and TensorRT engines where TensorRT runs."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from nanonet.cli.app import app, err, stdout
from nanonet.runtimes.errors import NanonetError

PLUGIN_HELP = (
    "TensorRT attention plugin: aot (the Triton kernel compiled into the engine, which runs without Python: "
    "trtexec, C++, nanonet's runtime) or jit (torch, for development)."
)


@app.command("export")
def export_command(
    checkpoint: str = typer.Argument(..., help="A nanonet checkpoint directory (e.g. RUN/student)."),
    out: str = typer.Option(..., "--out", help="Bundle directory to write (replaced atomically)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write model.onnx (the padded CPU graph)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the route's, 23 for dynamo)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Truncate texts to L tokens (default: the model's)."),
    route: str = typer.Option("auto", "--route", help="auto | dynamo | legacy (see export/onnx_export.py)."),
    trt: bool = typer.Option(
        False, "--trt", help="Also write model.trt.onnx (packed, plugin nodes) and build model.plan where TensorRT runs."
    ),
    max_tokens: int = typer.Option(16384, "--max-tokens", help="TensorRT profile: most tokens in a batch."),
    opt_tokens: int = typer.Option(4096, "--opt-tokens", help="TensorRT profile: tokens to tune for."),
    max_batch: int = typer.Option(128, "--max-batch", help="TensorRT profile: most sequences in a batch."),
    plugin: str = typer.Option("aot", "--plugin", help=PLUGIN_HELP),
    precision: str = typer.Option("fp16", "--precision", help="TensorRT engine precision: fp16 or fp32."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export a checkpoint to a bundle: model.onnx verified against torch, tokenizer.json, manifest.json."""
    from nanonet.export.tensorrt.engine import check_options
    from nanonet.extras import require

    check_options(plugin, precision)
    require("torch", "nanonet export")
    from nanonet.export.bundle import export_bundle
    from nanonet.export.onnx_export import DEFAULT_ROUTE

    if not onnx:
        raise NanonetError("--no-onnx: a bundle needs model.onnx (the TensorRT graph builds on it)")
    with err.status("exporting and verifying against torch"):
        manifest = export_bundle(checkpoint, out, max_length, opset, DEFAULT_ROUTE if route == "auto" else route, trt=trt)
    if as_json:
        stdout.print_json(json.dumps(manifest))
        return
    table = Table(title=f"nanonet export: {checkpoint} -> {out}", title_justify="left")
    for col in ("check", "batch", "max len", "max abs diff", "argmax"):
        table.add_column(col)
    for c in manifest["export"]["verification"]:
        table.add_row(
            escape(c["shape"]), str(c["batch"]), str(c["max_len"]), f"{c['max_abs_diff']:.1e}", "equal" if c["argmax_equal"] else "DIFFERS"
        )
    stdout.print(table)
    files = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in manifest["files"].items())
    stdout.print(
        f"route {manifest['export']['route']} (opset {manifest['export']['opset']}); labels {', '.join(map(escape, manifest['labels']))}; {files}"
    )
    if trt:
        _engine_or_instructions(out, max_tokens, opt_tokens, max_batch, plugin, precision)


def _engine_or_instructions(
    bundle: str, max_tokens: int, opt_tokens: int, max_batch: int, plugin: str = "aot", precision: str = "fp16"
) -> None:
    """Build model.plan where TensorRT runs; elsewhere say what was written and how to build it, exit 2."""
    from nanonet.export.tensorrt.engine import engine_command, unavailable

    why = unavailable()
    if why:
        err.print(
            f"wrote {escape(bundle)}/model.trt.onnx (packed graph, VarlenAttention plugin nodes, checked against torch); "
            f"no engine built here: {escape(why)}. On the target device run: {escape(engine_command(bundle, plugin, precision))}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    from nanonet.export.tensorrt.build import build_bundle_engine

    result = build_bundle_engine(
        bundle, max_tokens, opt_tokens, max_batch, plugin=plugin, precision=precision, log=lambda m: err.print(escape(m), highlight=False)
    )
    stdout.print(f"engine: {escape(bundle)}/model.plan (TensorRT {result['tensorrt']}, {result['attention']})")


@app.command()
def engine(
    bundle: str = typer.Argument(..., help="A bundle exported with --trt (it holds model.trt.onnx)."),
    max_tokens: int = typer.Option(16384, "--max-tokens", help="Profile: most tokens in a batch."),
    opt_tokens: int = typer.Option(4096, "--opt-tokens", help="Profile: tokens to tune for."),
    max_batch: int = typer.Option(128, "--max-batch", help="Profile: most sequences in a batch."),
    plugin: str = typer.Option("aot", "--plugin", help=PLUGIN_HELP),
    precision: str = typer.Option("fp16", "--precision", help="TensorRT engine precision: fp16 or fp32."),
) -> None:
    """Build the TensorRT engine (model.plan) of a bundle, on the device that will run it."""
    from nanonet.export.tensorrt.engine import check_options, unavailable

    check_options(plugin, precision)
    why = unavailable()
    if why:
        raise NanonetError(f"nanonet engine: {why}")
    _engine_or_instructions(bundle, max_tokens, opt_tokens, max_batch, plugin, precision)
