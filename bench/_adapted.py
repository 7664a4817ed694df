"""A default training run replayed up to its adapted teacher, for the scripts that study it.

bench/frozen_students.py and bench/teacher_ceiling.py score what a default run has before
its students' steps. `adapted_run` repeats train()'s first phases in train()'s order (the
seed set first, the cohort built before the contrastive phase), so the adapted teacher is
the one a default run of that set and seed adapts (bench/tuning.py's directories; test
files are never read: the tuning split stands where a run looks for test).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass

import torch
from tuning import DATA, tuning_dir  # bench/tuning.py, beside this file

from nanonet.data.splits import Splits
from nanonet.model.hf import Pretrained, load_pretrained
from nanonet.train import TrainArgs, trainer
from nanonet.train import distributed as dist
from nanonet.train.evaluate import eval_tokens_for
from nanonet.train.selection import Member


@dataclass
class AdaptedRun:
    args: TrainArgs
    ctx: dist.Context
    splits: Splits
    src: Pretrained  # the pretrained teacher, for building students of its layers
    data: trainer.Data
    members: list[Member]  # the adapted teacher first, then the cohort's students as built before the contrastive phase


def adapted_run(name: str, seed: int, labels_per_class: int, threads: int) -> AdaptedRun:
    """A default run of `name`'s tuning directory up to the end of its contrastive phase,
    holding N per class for selection that its teacher learns too, as the defaults did when
    the results of the scripts that use this were recorded."""
    out = tempfile.mkdtemp(prefix="nanonet-adapted-")  # the adapted teacher is saved there, as in a run; removed below
    args = TrainArgs(
        data=str(tuning_dir(name, DATA)), out=out, labels_per_class=labels_per_class, dev_per_class=None, seed=seed, threads=threads
    )
    args.validate()
    ctx = dist.setup()
    args = dataclasses.replace(args, eval_tokens=eval_tokens_for(ctx.device))  # as train() resolves it
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    splits, _ = trainer.draw_splits(args)
    src = load_pretrained(args.teacher)
    trainer.cap_length(src, args.max_length)
    data = trainer.tokenize_splits(args, splits, src)
    members, _ = trainer.build_cohort(args, src, data.num_classes, ctx)
    try:
        trainer.adapt(members[0].model, data, args, ctx)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return AdaptedRun(args, ctx, splits, src, data, members)
