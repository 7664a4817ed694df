"""`export_bundle`: a nanonet checkpoint -> a verified bundle (model.onnx, tokenizer.json,
manifest.json), written atomically through runtimes.bundle."""

from __future__ import annotations

import json
from pathlib import Path

from nanonet import __version__
from nanonet.export.onnx_export import DEFAULT_ROUTE, export_verified
from nanonet.model.checkpoint import load_checkpoint
from nanonet.model.encoder import NanoClassifier
from nanonet.runtimes.bundle import Manifest, write_bundle
from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import work_dir


def bundle_tokenizer(tokenizer_file: Path, max_length: int) -> tuple[bytes, int]:
    """The checkpoint's tokenizer set to truncate at `max_length` and not to pad (the runtime
    pads each micro-batch itself); returns (tokenizer.json bytes, pad id)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    pad_id = (tok.padding or {}).get("pad_id", 0)
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok.to_str().encode(), int(pad_id)


def layer_table(model: NanoClassifier) -> dict:
    cfg = model.config
    return {
        str(i): {
            "source_layer": cfg.layer_ids[i],
            "attention": "global" if cfg.window(i) < 0 else "local",
            "half_window": cfg.window(i),
            "precision": "fp32",
        }
        for i in range(cfg.num_layers)
    }


def provenance(checkpoint: Path) -> dict:
    """Where the model came from: the checkpoint's own record and, when the checkpoint sits
    in a training run directory, the run's figures for the chosen student."""
    config = json.loads((checkpoint / "config.json").read_text())
    out = {"checkpoint": str(checkpoint.resolve()), "nanonet_version": __version__, **config.get("provenance", {})}
    report = checkpoint.parent / "report.json"
    if report.is_file():
        try:
            r = json.loads(report.read_text())
            chosen = r["students"][r["chosen_student"]]
            if checkpoint.name == "student":
                out["training"] = {
                    "dev": chosen["dev"],
                    "test": chosen["test"],
                    "seconds": r["training"]["seconds"],
                    "labeled_sha256": r["data"]["labeled_sha256"],
                }
        except (ValueError, KeyError, IndexError, TypeError):
            pass  # a report from another version: the checkpoint's own record stands
    return out


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    max_length: int | None = None,
    opset: int | None = None,
    route: str = DEFAULT_ROUTE,
    trt: bool = False,
) -> dict:
    """Export, verify against torch, write the bundle; returns the manifest as a dict.

    `trt` also writes model.trt.onnx, the packed graph with VarlenAttention plugin nodes,
    verified against torch through ONNX Runtime's reference implementation of the op."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    cfg = model.config
    limit = cfg.max_position_embeddings if cfg.family == "bert" else cfg.max_length
    max_length = max_length or cfg.max_length
    if not 1 < max_length <= limit:
        raise NanonetError(f"--max-length: must be in 2..{limit} for this model, got {max_length}")
    # built beside the bundle (one filesystem, so the bundle renames into place), removed on every exit
    with work_dir(out, "export") as work:
        onnx_path, facts = export_verified(model, max_length, route, opset, work)
        tokenizer, pad_id = bundle_tokenizer(ckpt.tokenizer_file, max_length)
        files = {"model.onnx": onnx_path, "tokenizer.json": tokenizer}
        if trt:
            from nanonet.export.tensorrt.verify import export_packed_verified

            files["model.trt.onnx"], facts["tensorrt"] = export_packed_verified(model, max_length, work)
        manifest = Manifest(
            labels=list(ckpt.labels),
            max_length=max_length,
            pooling=model.pooling,
            inputs=facts["inputs"],
            outputs=facts["outputs"],
            precision="fp32",
            family=cfg.family,
            layers=layer_table(model),
            provenance=provenance(checkpoint),
            export={**facts, "pad_id": pad_id},
        )
        write_bundle(out, manifest, files)
    return manifest.__dict__
