"""Fixtures: tiny random Hugging Face checkpoints the tests write themselves, and sentences.

Nothing here imports torch at module level: the torch-free test modules (the runtime's,
the data layer's) share this conftest and run in an environment with only the base
install (.ci/run). The fixtures and helpers that need torch import it themselves, so a
test that uses one without torch installed fails with torch's ImportError."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests never use the hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [f"w{i}" for i in range(90)]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

SENTENCES = [
    "The central bank raised interest rates by half a point on Tuesday.",
    "Goal!",
    "Researchers released a new open-source compiler for embedded processors, claiming "
    "large gains in code size and energy use on common microcontroller benchmarks.",
    "Oil prices fell as supply worries eased.",
    "Who won the match last night between the two league leaders?",
]


def write_tokenizer(directory: Path) -> None:
    """A word-level fast tokenizer with BERT's special tokens, as tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tok.save(str(directory / "tokenizer.json"))


def _save(model, directory: Path) -> Path:
    import torch

    # Random init leaves norms at 1/0 and biases at 0: perturb every parameter, so a
    # misplaced norm or a bias fused in the wrong order shows up in parity tests.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(directory, safe_serialization=True)
    write_tokenizer(directory)
    return directory


def _tiny_bert(directory: Path, heads: int) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    return _save(BertModel(cfg).eval(), directory)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return _tiny_bert(tmp_path_factory.mktemp("tiny-bert"), heads=4)


@pytest.fixture(scope="session")
def tiny_bert_h16_dir(tmp_path_factory) -> Path:
    """Heads of 16: the smallest size the Triton attention kernel (tl.dot) takes."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-bert-h16"), heads=2)


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    return _save(DistilBertModel(cfg).eval(), tmp_path_factory.mktemp("tiny-distilbert"))


MODERNBERT_WINDOW = 8  # total window: a local token sees 4 neighbours each side, far fewer than the sequences


@pytest.fixture(scope="session")
def tiny_modernbert_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    cfg = ModernBertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=128,
        global_attn_every_n_layers=3,
        local_attention=MODERNBERT_WINDOW,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        cls_token_id=2,
        sep_token_id=3,
    )
    directory = _save(ModernBertModel(cfg).eval(), tmp_path_factory.mktemp("tiny-modernbert"))
    assert json.loads((directory / "config.json").read_text())["model_type"] == "modernbert"
    return directory


def random_sequences(lengths: list[int], vocab: int = 100, seed: int = 0) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, vocab, (n,), generator=g).tolist() for n in lengths]


def write_synthetic_data(directory: Path, per_class: dict[str, int], seed: int = 0, classes: int = 3) -> Path:
    """A small topic-classification set the tiny tokenizer understands: each class draws
    most words from its own slice of the vocabulary, the rest from a shared slice."""
    import random

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    names = ["alpha", "beta", "gamma", "delta"][:classes]
    for split, n in per_class.items():
        with (directory / f"{split}.jsonl").open("w") as f:
            for _ in range(n):
                for c, name in enumerate(names):
                    own = WORDS[c * 20 : (c + 1) * 20]
                    shared = WORDS[80:]
                    words = [rng.choice(own if rng.random() < 0.6 else shared) for _ in range(rng.randint(4, 30))]
                    f.write(json.dumps({"text": " ".join(words), "label": name}) + "\n")
    return directory


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bert_dir, tmp_path_factory) -> Path:
    """An exported bundle of the tiny BERT with a two-label head (needs torch and the export extra)."""
    from nanonet.export.bundle import export_bundle
    from nanonet.model.checkpoint import save_checkpoint
    from nanonet.model.encoder import NanoClassifier
    from nanonet.model.hf import load_pretrained

    root = tmp_path_factory.mktemp("tiny-bundle")
    src = load_pretrained(str(tiny_bert_dir))
    ckpt = save_checkpoint(root / "ckpt", NanoClassifier(src.encoder, 2, src.pooling), ["a", "b"], src.path)
    export_bundle(ckpt, root / "bundle", max_length=32)
    return root / "bundle"


@pytest.fixture()
def tiny_data(tmp_path) -> Path:
    return write_synthetic_data(tmp_path / "data", {"train": 40, "dev": 8, "test": 12})


def run_interpreted(code: str, *args: str, timeout: int = 600):
    """Run `code` (with sys.argv = ['-c', *args]) in a child Python under Triton's
    interpreter, which runs kernels on the CPU; return the JSON value it prints last.

    Triton reads TRITON_INTERPRET when `@triton.jit` decorates a function: when triton
    itself (its language library is jit functions too) and the kernel module are imported.
    So the interpreted kernels live in a process of their own, started with the variable
    set, and this process's environment and its imported kernels stay as they are. The
    child starts in tests/, so `import test_x` gives it a test module's helpers."""
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# as the session found it, before any test module was collected (imported)
TRITON_INTERPRET_AT_START = os.environ.get("TRITON_INTERPRET")


@pytest.fixture(autouse=True, scope="module")
def _triton_interpret_stays_scoped():
    """TRITON_INTERPRET is as the session found it after every test module: interpreted
    kernels run in a child process (`run_interpreted`), and no module sets it, on import or after."""
    yield
    assert os.environ.get("TRITON_INTERPRET") == TRITON_INTERPRET_AT_START, "a test module changed TRITON_INTERPRET for the whole process"
