"""Contrastive adaptation of the teacher on the labels, before anything else trains.

A pretrained sentence encoder places texts by topic, not by the user's classes. SetFit
(Tunstall et al., 2022) fine-tunes the whole body on pairs built from the few labels, so
that texts of a class move together, and fits a logistic regression on the result; that
is what puts it ahead of a frozen body with a linear head. Here the same idea takes the
batch form: the supervised contrastive loss (Khosla et al., NeurIPS 2020) over a batch of
labeled texts treats every same-class pair in it as a positive, so one step sees all the
pairs a batch holds instead of one pair per row. The teacher's head is then fitted on
the adapted embeddings (multinomial logistic regression), and label propagation, the
teacher's own training and the students' distillation all start from this teacher.

Only the teacher trains here. The students are then copies of the adapted teacher's
layers (`--students-from adapted`, the default) or of the pretrained ones, and train their
bias terms as before. The adapted teacher's head is always fitted, `--random-heads` or not:
the head it had was fitted to other embeddings.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from nanonet.data.tokens import BatchStream, Tokenized
from nanonet.model.encoder import NanoClassifier
from nanonet.train.evaluate import autocast
from nanonet.train.heads import fit_member_head
from nanonet.train.optim import warmup_then_decay
from nanonet.train.progress import Advance
from nanonet.train.views import packed_rows

CONTRASTIVE_SALT = 3  # its own batch stream, apart from the cohort's labeled and unlabeled ones


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al.'s L_out: for each row with a same-class partner in the batch, the mean
    over its positives p of -log softmax_{a != i}(z_i . z_a / t)[p], z the unit-length
    embeddings; averaged over those rows. 0 when no row has a positive."""
    with torch.autocast(embeddings.device.type, enabled=False):  # bf16 would round logits of +-1/t
        z = F.normalize(embeddings.float(), dim=-1)
        sim = z @ z.T / temperature
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = sim.masked_fill(self_pair, float("-inf")).log_softmax(-1)
    positives = (labels[:, None] == labels[None, :]) & ~self_pair
    count = positives.sum(-1)
    has = count > 0
    if not bool(has.any()):
        return sim.new_zeros(()) * sim.sum()  # keeps the graph, so backward still runs
    per_row = -log_prob.masked_fill(~positives, 0.0).sum(-1) / count.clamp_min(1)
    return per_row[has].mean()


def contrastive_floor(labels: torch.Tensor) -> float:
    """The least value `supervised_contrastive` can take on a batch with these labels: each
    row with P same-class partners scores at best log P (all its positives equally close,
    every other row infinitely far), averaged over the rows that have a partner."""
    count = (labels[:, None] == labels[None, :]).sum(-1) - 1
    has = count > 0
    return float(count[has].float().log().mean()) if bool(has.any()) else 0.0


def adapt_teacher(
    teacher: NanoClassifier,
    lab: Tokenized,
    lab_y: torch.Tensor,
    num_classes: int,
    steps: int,
    lr: float,
    temperature: float,
    max_tokens: int,
    eval_tokens: int,
    seed: int,
    device: torch.device,
    advance: Advance | None = None,
    stop_gap: float = 0.0,
    fit_head: bool = True,
) -> dict:
    """`steps` AdamW steps of the supervised contrastive loss on every encoder parameter
    (linear warm-up over a tenth, then linear decay), then the head fitted on the new
    embeddings. With `stop_gap` > 0 the steps end early once a step's loss is within
    `stop_gap` of its batch's floor (contrastive_floor): the classes of the batch have
    collapsed, and with a few dozen labels every batch is the same one, so more steps only
    cost time. Returns what the report says of it; `advance` hears of each step."""
    tic = time.perf_counter()
    teacher.to(device).train()
    params = list(teacher.encoder.parameters())
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    stream = BatchStream(lab.lengths, max_tokens, seed, CONTRASTIVE_SALT)
    losses, skipped = [], 0
    for k in range(steps):
        rows = stream[k]
        y = lab_y[torch.as_tensor(rows)]
        if len(torch.unique(y)) == len(y):  # no same-class pair: nothing to learn, and weight decay would still move every weight
            skipped += 1
        else:
            batch = packed_rows(lab, rows).to(device)
            with autocast(device):
                loss = supervised_contrastive(teacher.embed(batch), y.to(device), temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:  # the schedule counts skipped steps too
                group["lr"] = lr * warmup_then_decay(k, warm, steps)
            optimizer.step()
            losses.append(float(loss.detach()))
            if stop_gap > 0 and losses[-1] - contrastive_floor(y) < stop_gap:
                if advance:
                    advance(steps - k)  # the bar ends full
                break
        if advance:
            advance(1)
    for p, w in zip(params, was):
        p.grad = None
        p.requires_grad_(w)
    head_loss = fit_member_head(teacher, lab, lab_y, num_classes, eval_tokens, device) if fit_head else None
    return {
        "steps": steps,
        "steps_run": skipped + len(losses),  # each step run either skipped or left a loss
        "skipped_without_pairs": skipped,
        "trained_parameters": sum(p.numel() for p in params),
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
        "head_loss": round(head_loss, 4) if fit_head else None,
        "seconds": round(time.perf_counter() - tic, 1),
    }
