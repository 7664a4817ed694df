"""The `nanonet` command line (Typer).

Each command imports what it needs inside its body, so `nanonet --help` and the
torch-free commands work on a device that has only the base install, and a command
whose extra is missing says which `pip install` fixes it.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nanonet import __version__
from nanonet.errors import NanonetError

app = typer.Typer(
    name="nanonet",
    help="Train small text classifiers from very few labels and ship them to devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"nanonet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def parse_layers(value: Optional[str]) -> Optional[list[int]]:
    """'0,2,4' -> [0, 2, 4]."""
    if value is None:
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip() != ""]
    except ValueError:
        raise NanonetError(f"--layers: expected comma-separated layer numbers such as 0,2,4, got '{value}'") from None


@app.command()
def info(
    model: str = typer.Argument(..., help="A nanonet checkpoint, a Hugging Face checkpoint directory or hub id, or 'sentence-transformers/all-MiniLM-L6-v2'."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Describe the student made of these layers, e.g. 0,2,4."),
    global_every: Optional[int] = typer.Option(None, "--global-every", help="Make every N-th layer global and the others local."),
    local_window: Optional[int] = typer.Option(None, "--local-window", help="Tokens in a local layer's window (both sides together)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a model: family, layers, sizes, attention pattern, parameters, backend."""
    from nanonet.model.describe import describe_model

    facts = describe_model(model, parse_layers(layers), global_every, local_window)
    if as_json:
        out_console.print_json(json.dumps(facts))
        return
    table = Table(title=f"nanonet info: {model}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in facts.items():
        if key == "attention":
            value = "  ".join(f"{a['layer']}:{a['type']}" + (f"({a['window']})" if a["type"] == "local" else "") for a in value)
        elif key == "backends":
            value = "\n".join(f"{b['device']}/{b['dtype']}: {b['backend']}" for b in value)
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), escape(str(value)))
    out_console.print(table)


def _layer_sets(value: Optional[str]) -> Optional[list[list[int]]]:
    """'0,2,4/1,3,5' -> [[0, 2, 4], [1, 3, 5]]."""
    if value is None:
        return None
    return [parse_layers(part) or [] for part in value.split("/")]


@app.command()
def train(
    data: str = typer.Option(..., "--data", help="Directory with train/dev/test files, a train file, or a datasets name."),
    out: str = typer.Option(..., "--out", help="Run directory (student/, teacher/, report.json)."),
    labels_per_class: int = typer.Option(10, "--labels-per-class", help="N labeled examples drawn per class."),
    seed: int = typer.Option(1, "--seed"),
    teacher: str = typer.Option("sentence-transformers/all-MiniLM-L6-v2", "--teacher", help="Teacher checkpoint, hub id or the default."),
    unlabeled: list[str] = typer.Option([], "--unlabeled", help="Extra unlabeled text file (repeatable)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    students: int = typer.Option(2, "--students", help="K students in the cohort."),
    student_layers: Optional[str] = typer.Option(None, "--student-layers", help="Teacher layers per student, e.g. 0,2,4/1,3,5."),
    trainable: str = typer.Option("bias", "--trainable", help="What the students train: bias | bias+norm | all"),
    teacher_trainable: str = typer.Option("bias", "--teacher-trainable", help="What the teacher trains: bias | bias+norm | all"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (default: --epochs over the unlabeled pool)."),
    epochs: float = typer.Option(2.0, "--epochs", help="Passes over the unlabeled pool when --steps is not given."),
    eval_every: int = typer.Option(25, "--eval-every", help="Dev evaluation and resume state every M steps."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Students' encoder learning rate (default 3e-3 for bias, 5e-5 for all)."),
    teacher_lr: Optional[float] = typer.Option(None, "--teacher-lr", help="Teacher's encoder learning rate (same defaults)."),
    graph_weight: float = typer.Option(1.0, "--graph-weight", help="Teacher's loss on labels propagated over the unlabeled pool (0: off)."),
    student_graph_weight: float = typer.Option(1.0, "--student-graph-weight", help="Students' loss on the propagated labels (0: off)."),
    graph_k: int = typer.Option(10, "--graph-k", help="Neighbours per text in the label-propagation graph."),
    graph_refreshes: int = typer.Option(0, "--graph-refreshes", help="Reruns of label propagation on the training teacher's embeddings."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last saved state."),
    attention: str = typer.Option("auto", "--attention", help="auto | flash | torch_varlen | sdpa | reference"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Distil a teacher into a cohort of students from N labels per class (NanoNet)."""
    from nanonet.train import TrainArgs, train as run

    args = TrainArgs(
        data=data, out=out, labels_per_class=labels_per_class, seed=seed, teacher=teacher, unlabeled=list(unlabeled),
        text_col=text_col, label_col=label_col, students=students, student_layers=_layer_sets(student_layers),
        trainable=trainable, teacher_trainable=teacher_trainable, steps=steps, epochs=epochs, eval_every=eval_every,
        lr=lr, teacher_lr=teacher_lr, graph_weight=graph_weight, student_graph_weight=student_graph_weight, graph_k=graph_k,
        graph_refreshes=graph_refreshes, resume=resume,
        attention=attention, threads=threads,
    )  # fmt: skip
    try:
        report = run(args, progress=not as_json)
    except KeyboardInterrupt:
        raise NanonetError(f"interrupted; continue with the same command plus --resume (state in {out}/state)") from None
    if as_json:
        out_console.print_json(json.dumps({k: v for k, v in report.items() if k != "history"}))
        return
    _print_train_report(report, out)


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _print_train_report(report: dict, out: str) -> None:
    table = Table(title=f"nanonet train: {report['settings']['data']}, {report['settings']['labels_per_class']} labels per class, seed {report['settings']['seed']}", title_justify="left")
    for col in ("model", "layers", "view", "dev acc / F1", "test acc / F1", "trainable / total"):
        table.add_column(col, no_wrap=True)
    chosen = report["chosen_student"]
    for i, r in enumerate([report["teacher"], *report["students"]]):
        name = r["name"] + (" *" if i - 1 == chosen else "")
        table.add_row(name, ",".join(map(str, r["layers"])), r["view"] or "-",
                      f"{_pct(r['dev']['accuracy'])} / {_pct(r['dev']['macro_f1'])}",
                      f"{_pct(r['test']['accuracy'])} / {_pct(r['test']['macro_f1'])}",
                      f"{r['trainable_parameters'] / 1e3:,.1f}K / {r['parameters'] / 1e6:,.1f}M")  # fmt: skip
    table.caption = "* the chosen student (best dev accuracy; a lead within the dev set's noise goes to the one agreeing most with the teacher), saved to RUN/student"
    out_console.print(table)
    t, d = report["training"], report["data"]
    out_console.print(
        f"{t['steps']} steps in {t['seconds']:.0f}s, {t['tokens_per_second']:,.0f} tokens/s, {100 * t['padding_avoided']:.0f}% padding avoided; "
        f"{d['labeled']} labeled, {d['unlabeled']} unlabeled, dev {d['dev']} ({d['dev_source']}), test {d['test']}"
    )
    out_console.print(f"student: {out}/student  teacher: {out}/teacher  report: {out}/report.json")


@app.command("eval")
def evaluate_command(
    checkpoint: str = typer.Argument(..., help="A nanonet checkpoint directory (e.g. RUN/student)."),
    data: str = typer.Option(..., "--data", help="A labeled file (JSONL, CSV, TSV, Parquet)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Evaluate a checkpoint on a labeled file: accuracy, macro-F1, per-class accuracy."""
    from nanonet.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data, text_col, label_col)
    if as_json:
        out_console.print_json(json.dumps(result))
        return
    table = Table(title=f"nanonet eval: {checkpoint} on {data} ({result['n']} examples)", title_justify="left")
    table.add_column("class")
    table.add_column("n")
    table.add_column("accuracy")
    for name, row in result["per_class"].items():
        table.add_row(escape(name), str(row["n"]), _pct(row["accuracy"]))
    table.add_row("[bold]all", str(result["n"]), f"[bold]{_pct(result['accuracy'])}[/] (macro-F1 {_pct(result['macro_f1'])})")
    out_console.print(table)


PLUGIN_HELP = ("TensorRT attention plugin: aot (the Triton kernel compiled into the engine, which runs without Python: "
               "trtexec, C++, nanonet's runtime) or jit (torch, for development).")  # fmt: skip


@app.command("export")
def export_command(
    checkpoint: str = typer.Argument(..., help="A nanonet checkpoint directory (e.g. RUN/student)."),
    out: str = typer.Option(..., "--out", help="Bundle directory to write (replaced atomically)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write model.onnx (the padded CPU graph)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the route's, 23 for dynamo)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Truncate texts to L tokens (default: the model's)."),
    route: str = typer.Option("auto", "--route", help="auto | dynamo | legacy (see export/onnx_export.py)."),
    trt: bool = typer.Option(False, "--trt", help="Also write model.trt.onnx (packed, plugin nodes) and build model.plan where TensorRT runs."),
    max_tokens: int = typer.Option(16384, "--max-tokens", help="TensorRT profile: most tokens in a batch."),
    opt_tokens: int = typer.Option(4096, "--opt-tokens", help="TensorRT profile: tokens to tune for."),
    max_batch: int = typer.Option(128, "--max-batch", help="TensorRT profile: most sequences in a batch."),
    plugin: str = typer.Option("aot", "--plugin", help=PLUGIN_HELP),
    precision: str = typer.Option("fp16", "--precision", help="TensorRT engine precision: fp16 or fp32."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export a checkpoint to a bundle: model.onnx verified against torch, tokenizer.json, manifest.json."""
    from nanonet.extras import require

    from export.tensorrt.engine import check_options

    check_options(plugin, precision)
    require("torch", "nanonet export")
    from export.bundle import export_bundle
    from export.onnx_export import DEFAULT_ROUTE

    if not onnx:
        raise NanonetError("--no-onnx: a bundle needs model.onnx (the TensorRT graph builds on it)")
    with err.status("exporting and verifying against torch"):
        manifest = export_bundle(checkpoint, out, max_length, opset, DEFAULT_ROUTE if route == "auto" else route, trt=trt)
    if as_json:
        out_console.print_json(json.dumps(manifest))
        return
    table = Table(title=f"nanonet export: {checkpoint} -> {out}", title_justify="left")
    for col in ("check", "batch", "max len", "max abs diff", "argmax"):
        table.add_column(col)
    for c in manifest["export"]["verification"]:
        table.add_row(escape(c["shape"]), str(c["batch"]), str(c["max_len"]), f"{c['max_abs_diff']:.1e}", "equal" if c["argmax_equal"] else "DIFFERS")
    out_console.print(table)
    files = ", ".join(f"{k} {v['bytes'] / 1e6:.1f} MB" for k, v in manifest["files"].items())
    out_console.print(f"route {manifest['export']['route']} (opset {manifest['export']['opset']}); labels {', '.join(map(escape, manifest['labels']))}; {files}")
    if trt:
        _engine_or_instructions(out, max_tokens, opt_tokens, max_batch, plugin, precision)


def _engine_or_instructions(bundle: str, max_tokens: int, opt_tokens: int, max_batch: int, plugin: str = "aot",
                            precision: str = "fp16") -> None:  # fmt: skip
    """Build model.plan where TensorRT runs; elsewhere say what was written and how to build it, exit 2."""
    from export.tensorrt.engine import engine_command, unavailable

    why = unavailable()
    if why:
        err.print(f"wrote {escape(bundle)}/model.trt.onnx (packed graph, VarlenAttention plugin nodes, checked against torch); "
                  f"no engine built here: {escape(why)}. On the target device run: {escape(engine_command(bundle, plugin, precision))}",
                  highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(2)
    from export.tensorrt.build import build_bundle_engine

    result = build_bundle_engine(bundle, max_tokens, opt_tokens, max_batch, plugin=plugin, precision=precision,
                                 log=lambda m: err.print(escape(m), highlight=False))  # fmt: skip
    out_console.print(f"engine: {escape(bundle)}/model.plan (TensorRT {result['tensorrt']}, {result['attention']})")


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
    from export.tensorrt.engine import check_options, unavailable

    check_options(plugin, precision)
    why = unavailable()
    if why:
        raise NanonetError(f"nanonet engine: {why}")
    _engine_or_instructions(bundle, max_tokens, opt_tokens, max_batch, plugin, precision)


def _parse_sizes(value: str) -> list[int]:
    try:
        sizes = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise NanonetError(f"--batch-sizes: expected positive integers such as 1,8,32,128, got '{value}'")
    return sizes


@app.command()
def predict(
    bundle: str = typer.Argument(..., help="A bundle directory (from nanonet export)."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify (or use --input)."),
    input: Optional[str] = typer.Option(None, "--input", help="A JSONL, CSV, TSV or text file, streamed."),
    output: Optional[str] = typer.Option(None, "--output", help="Write one JSON line per input line here (default: stdout)."),
    text_col: str = typer.Option("text", "--text-col"),
    batch_size: int = typer.Option(32, "--batch-size"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Classify texts with a bundle (no torch needed)."""
    from runtimes import load

    if bool(texts) == bool(input):
        raise NanonetError("give texts as arguments or --input FILE (one of the two)")
    clf = load(bundle, backend, threads)
    if texts:
        preds = clf.predict(texts, batch_size)
        if as_json or output:
            lines = "".join(json.dumps({"text": t, **p.to_dict()}, ensure_ascii=False) + "\n" for t, p in zip(texts, preds))
            _emit(lines, output)
            return
        table = Table(title=f"nanonet predict: {bundle}", title_justify="left")
        for col in ("text", "label", "score"):
            table.add_column(col)
        for t, p in zip(texts, preds):
            table.add_row(escape(t if len(t) <= 80 else t[:77] + "..."), escape(p.label), f"{p.score:.3f}")
        out_console.print(table)
        return
    from nanonet.predict_file import predict_file

    summary = predict_file(clf, input, output, text_col, batch_size, progress=output is not None, console=err)
    if as_json and output:
        out_console.print_json(json.dumps(summary))
    elif output:
        out_console.print(f"{summary['predicted']} predictions, {summary['malformed']} malformed lines -> {escape(output)}")


def _emit(text: str, output: Optional[str]) -> None:
    if output:
        from runtimes.fsutil import atomic_write_text

        atomic_write_text(output, text)
    else:
        sys.stdout.write(text)


@app.command()
def bench(
    bundle: str = typer.Argument(..., help="A bundle directory (from nanonet export)."),
    data: str = typer.Option(..., "--data", help="Texts to classify: a JSONL, CSV, TSV or text file."),
    text_col: str = typer.Option("text", "--text-col"),
    batch_sizes: str = typer.Option("1,8,32,128", "--batch-sizes"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
    backend: str = typer.Option("auto", "--backend", help="auto | onnxruntime"),
    seconds: float = typer.Option(5.0, "--seconds", help="Time budget per batch size."),
    max_docs: int = typer.Option(4096, "--max-docs", help="Most documents per batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Measure a bundle: documents/s and p50/p95/p99 latency per batch size, load time, memory, size."""
    from rich.progress import Progress

    from runtimes.benchmark import bench_bundle
    from runtimes.texts import iter_records

    sizes = _parse_sizes(batch_sizes)
    texts = [r.text for r, _ in zip((r for r in iter_records(data, text_col) if r.text), range(max_docs))]
    if not texts:
        raise NanonetError(f"{data}: no texts to benchmark with")
    with Progress(console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("bench", total=len(sizes))
        result = bench_bundle(bundle, texts, sizes, threads, backend, seconds, max_docs, on_size=lambda b: bar.advance(task))
    if as_json:
        out_console.print_json(json.dumps(result))
        return
    table = Table(title=f"nanonet bench: {bundle} ({result['backend']}, {result['precision']}, threads {threads or 'default'})", title_justify="left")
    for col in ("batch", "docs/s", "p50 ms", "p95 ms", "p99 ms", "overhead"):
        table.add_column(col, justify="right")
    for r in result["results"]:
        table.add_row(str(r["batch_size"]), f"{r['docs_per_second']:,.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{100 * r['overhead_share']:.1f}%")  # fmt: skip
    out_console.print(table)
    out_console.print(f"load {result['load_seconds']:.2f}s, peak memory {result['peak_rss_mb']:.0f} MB, bundle {result['bundle_mb']:.1f} MB, "
                      f"{result['texts']} texts from {escape(data)}")


@app.command()
def quantize(
    bundle: str = typer.Argument(..., help="An fp32 bundle (from nanonet export)."),
    out: str = typer.Option(..., "--out", help="The int8 bundle to write (replaced atomically)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Unlabeled calibration text: JSONL, CSV, TSV or text."),
    method: Optional[str] = typer.Option(None, "--method", help="dynamic (default) | static (needs --calib)."),
    calibrator: str = typer.Option("minmax", "--calibrator", help="minmax | percentile | entropy (static)."),
    samples: int = typer.Option(1024, "--samples", help="Calibration texts sampled from --calib (half held out to check agreement)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the calibration sample."),
    target: str = typer.Option("cpu", "--target", help="cpu | tensorrt (explicit symmetric int8 Q/DQ)."),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Keep the most sensitive layers in float until fp32 agreement reaches this."),
    outliers: str = typer.Option("auto", "--outliers", help="auto | always | off: with --calib (dynamic), input channels whose range exceeds 6x the median channel's multiply in float; auto: when agreement falls short."),
    smooth: float = typer.Option(0.0, "--smooth", help="SmoothQuant alpha with --calib, e.g. 0.75 (default 0: off): activation range moved into the weights."),
    weight_bits: int = typer.Option(8, "--weight-bits", help="8 | 7 (dynamic): 7-bit weights keep the fast integer kernels on x86 CPUs without VNNI."),
    text_col: str = typer.Option("text", "--text-col"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's quantization record as JSON."),
) -> None:
    """Quantize a bundle to int8 (ONNX Runtime), with calibration data and mixed precision."""
    from nanonet.extras import require

    require("onnx", "nanonet quantize")
    from calibrate.quantize import quantize_bundle

    say = (lambda msg: None) if as_json else (lambda msg: err.print(escape(msg), highlight=False))
    with err.status("quantizing"):
        manifest = quantize_bundle(bundle, out, calib, method, calibrator, samples, seed, target, min_agreement, text_col, threads, say,
                                   smooth, outliers, weight_bits=weight_bits)  # fmt: skip
    q = manifest["quantization"]
    if as_json:
        out_console.print_json(json.dumps(q))
        return
    agreement = "-" if q["agreement_held_out"] is None else f"{100 * q['agreement_held_out']:.1f}%"
    out_console.print(
        f"{escape(out)}: {manifest['precision']}, {q['census']['quantized_matmuls']} quantized matrix multiplications, "
        f"{len(q['kept_float'])} kept in float{(' (' + ', '.join(q['kept_float']) + ')') if q['kept_float'] else ''}"
        f"{_outlier_summary(q.get('outliers'))}; "
        f"agreement with fp32 on {q['calibration']['held_out']} held-out texts: {agreement}; "
        f"model.onnx {manifest['files']['model.onnx']['bytes'] / 1e6:.1f} MB"
    )


def _outlier_summary(split: dict | None) -> str:
    if not split or not split["channels"]:
        return ""
    n = sum(len(c) for c in split["channels"].values())
    return f", {n} outlier channels of {len(split['channels'])} multiplied in float"


@app.command()
def validate(
    candidate: str = typer.Argument(..., help="The bundle to check (e.g. the int8 one)."),
    reference: str = typer.Option(..., "--reference", help="The bundle to compare with (e.g. its fp32 source)."),
    data: str = typer.Option(..., "--data", help="Texts, labeled or not: JSONL, CSV, TSV or text."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Exit 1 when accuracy drops by more than this (a fraction)."),
    text_col: str = typer.Option("text", "--text-col"),
    label_col: str = typer.Option("label", "--label-col"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    plot_file: Optional[str] = typer.Option(None, "--plot", help="Write a PNG: per-class accuracy, speed and size."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Compare a candidate bundle with a reference: accuracy, agreement, flips, speed, size; exit 1 past --max-drop."""
    from calibrate.validate import plot, validate as run

    report = run(candidate, reference, data, text_col, label_col, threads=threads)
    if plot_file:
        plot(report, plot_file)
    failed = report["accuracy_drop"] is not None and report["accuracy_drop"] > max_drop
    report["max_drop"], report["passed"] = max_drop, not failed
    if as_json:
        out_console.print_json(json.dumps(report))
    else:
        _print_validation(report)
    if failed:
        err.print(f"[bold red]failed:[/] accuracy dropped {100 * report['accuracy_drop']:.2f} points (limit {100 * max_drop:.2f})")
        raise typer.Exit(1)


def _print_validation(r: dict) -> None:
    table = Table(title=f"nanonet validate on {escape(r['data'])} ({r['n']} texts)", title_justify="left")
    for col in ("bundle", "precision", "accuracy", "macro-F1", "docs/s", "size MB"):
        table.add_column(col)
    for side in ("reference", "candidate"):
        b = r[side]
        table.add_row(escape(b["bundle"]), b["precision"], _pct(b.get("accuracy")), _pct(b.get("macro_f1")),
                      f"{b['docs_per_second']:.1f}", f"{b['size_mb']:.1f}")  # fmt: skip
    out_console.print(table)
    out_console.print(f"agreement {100 * r['agreement']:.2f}%, mean KL {r['mean_kl']:.2e}, max prob diff {r['max_prob_diff']:.3f}, "
                      f"{r['flipped']} flipped; speed x{r['speedup']:.2f}, size x{r['size_ratio']:.2f}")
    if r["per_class"]:
        per = Table(title="per-class accuracy", title_justify="left")
        for col in ("class", "n", "reference", "candidate", "change"):
            per.add_column(col)
        for name, c in r["per_class"].items():
            change = "-" if c["reference"] is None else f"{100 * (c['candidate'] - c['reference']):+.1f}"
            per.add_row(escape(name), str(c["n"]), _pct(c["reference"]), _pct(c["candidate"]), change)
        out_console.print(per)
    for f in r["flips"]:
        out_console.print(f"  flipped: {escape(f['reference'])} -> {escape(f['candidate'])} (gold {escape(str(f['gold']))}): {escape(f['text'][:100])}")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except NanonetError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
