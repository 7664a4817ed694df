"""The resume state of a run: RUN/state/{tensors.safetensors, state.json}, written atomically.

Frozen weights are rebuilt exactly as at the start (from the teacher, and from the adapted
teacher that RUN/adapted_teacher.safetensors holds), so the state holds
only what training changes: trainable parameters, each member's best trainable
parameters, the optimizer's moments, the scheduler position and the torch RNG, and the
propagated labels once a refresh has replaced the pretrained graph (the teacher that
produced them is gone by the time a run resumes)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nanonet.runtimes.errors import NanonetError
from nanonet.runtimes.fsutil import atomic_dir

IGNORED_ARGS = {"resume", "threads", "out"}  # may differ between a run and its resumption


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in module.named_parameters() if p.requires_grad}


def save_state(
    directory: Path,
    args,
    cohort,
    optimizer,
    scheduler,
    members,
    step: int,
    history: list,
    tokens: int,
    seconds: float,
    world_size: int = 1,
    graph=None,
    refreshes: list | None = None,
) -> None:
    """`graph`: the refreshed GraphTargets, saved when `refreshes` (their records) is not empty."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in trainable_state(cohort).items()}
    for i, m in enumerate(members):
        for k, v in (m.best_state or {}).items():
            tensors[f"best.{i}.{k}"] = v
    opt = optimizer.state_dict()
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"opt.{idx}.{key}"] = value.detach().cpu().reshape(value.shape)
    if graph is not None and refreshes:
        tensors["graph.probs"], tensors["graph.weights"] = graph.probs, graph.weights
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "step": step,
        "history": history,
        "tokens": tokens,
        "seconds": seconds,
        "world_size": world_size,
        "args": {k: v for k, v in args.to_dict().items() if k not in IGNORED_ARGS},
        "best": [m.best for m in members],
        "has_best": [m.best_state is not None for m in members],
        "param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "graph_refreshes": refreshes or [],
    }
    with atomic_dir(directory) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "tensors.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_state(directory: Path, args, cohort, optimizer, scheduler, members, world_size: int = 1) -> tuple[int, list, int, float, dict]:
    """Restore a saved state into a freshly built cohort; returns (step, history, tokens,
    seconds, graph), where graph holds the refreshed propagated labels ("probs", "weights")
    and their records ("refreshes"), or nothing before the first refresh.

    Resuming is exact on a CPU in one process. Elsewhere it continues correctly but not
    bitwise: only rank 0's RNG state is kept, and GPU kernels are not deterministic."""
    from nanonet.model.files import read_safetensors

    meta_file = directory / "state.json"
    if not meta_file.is_file():
        raise NanonetError(f"{directory}: no saved state to resume (it is written every --eval-every steps)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise NanonetError(f"{meta_file}: not valid JSON ({e})") from None
    if meta.get("world_size", 1) != world_size:
        raise NanonetError(f"{directory}: saved with {meta.get('world_size', 1)} processes, resumed with {world_size}; use the same number")
    now = {k: v for k, v in args.to_dict().items() if k not in IGNORED_ARGS}
    changed = sorted(k for k in now if json.dumps(now[k]) != json.dumps(meta["args"].get(k)))
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')} ({meta['args'].get(k)!r} -> {now[k]!r})" for k in changed)
        raise NanonetError(f"{directory}: cannot resume with different settings: {flags}")
    tensors = read_safetensors(directory / "tensors.safetensors")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = cohort.load_state_dict(model_state, strict=False)
    if unexpected or len(model_state) != sum(1 for p in cohort.parameters() if p.requires_grad):
        raise NanonetError(f"{directory / 'tensors.safetensors'}: does not match this run's trainable parameters")
    for i, m in enumerate(members):
        m.best = meta["best"][i]
        if meta["has_best"][i]:
            prefix = f"best.{i}."
            m.best_state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, slot = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[slot] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    graph = {"refreshes": meta.get("graph_refreshes", [])}
    if "graph.probs" in tensors:
        graph.update(probs=tensors["graph.probs"], weights=tensors["graph.weights"])
    return meta["step"], meta["history"], meta["tokens"], meta["seconds"], graph
