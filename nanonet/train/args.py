"""TrainArgs: every setting of a NanoNet training run, one documented field each.

The report stores all of them, so a run can be reproduced from its report.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from nanonet.runtimes.errors import NanonetError

TRAINABLE = ("bias", "bias+norm", "all")
# TrainArgs overrides for a run that learns from the labels alone: no term reads unlabeled
# text, no contrastive phase, random heads (the benchmark's and the tests' baseline)
SUPERVISED_ONLY = dict(
    kd_weight=0.0,
    mutual_weight=0.0,
    self_train_weight=0.0,
    graph_weight=0.0,
    student_graph_weight=0.0,
    teacher_warmup_steps=0,
    contrastive_steps=0,
    fit_heads=False,
    teacher_dev_labels=False,  # supervised on the training labels alone
    student_head_dev_labels=False,
    pseudo_head_share=0.0,  # no propagation, so no pseudo-labels
    student_pseudo_head_share=0.0,
)
VIEWS = ("cutoff", "noise", "dropout")


@dataclass
class TrainArgs:
    data: str | None
    """A directory with train/dev/test files, a single train file, or a `datasets` name (N labels per class are drawn from train); None with `labeled`."""
    out: str
    """Run directory: student/, teacher/, report.json and the resume state go here."""
    labeled: list[str] = field(default_factory=list)
    """Files of hand-labeled rows (classes of any size; e.g. each round of `nanonet select`), instead of drawing N per class from `data`; the pool comes from `unlabeled`."""
    dev: str | None = None
    """With `labeled`: a labeled file for model selection (none: every member keeps its final state)."""
    test: str | None = None
    """With `labeled`: a labeled file to report test figures on."""
    labels_per_class: int = 10
    """N: labeled examples drawn per class from train; the rest of train becomes unlabeled."""
    seed: int = 1
    """Seeds the label draw, the batch order, dropout and data views."""
    teacher: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Teacher: a local Hugging Face checkpoint, a hub id, or the default (packaged) MiniLM."""
    text_col: str = "text"
    """Column holding the text."""
    label_col: str = "label"
    """Column holding the label."""
    unlabeled: list[str] = field(default_factory=list)
    """Extra files of unlabeled text added to the unlabeled pool."""
    max_unlabeled: int | None = None
    """At most this many texts of the unlabeled pool (drawn by seed; None: all of it): label propagation and an epoch of the steps cost in proportion."""
    dev_per_class: int | None = 0
    """Labeled examples per class held for model selection, drawn from the dev file or held out from train without one (None: N). 0, the default: every label the run is given trains, each member keeps its final state, and in a cohort the student agreeing most with the teacher ships."""
    students: int = 1
    """K: number of students in the cohort (1: one student, distilled from the teacher; 2 or more adds mutual learning and a choice between them)."""
    student_layers: list[list[int]] | None = None
    """Teacher layers of each student; default: half of them, the bottom ones and the last first, then every other layer (0,1,5 / 0,2,4 / 1,3,5 of 6)."""
    trainable: str = "bias"
    """'bias' (bias terms and the classifier heads), 'bias+norm' (also LayerNorm weights), or 'all'."""
    teacher_trainable: str = "bias"
    """What the teacher trains (same choices as `trainable`); only the students ship, so "all" costs training time only."""
    teacher_lr: float | None = None
    """AdamW learning rate of the teacher's encoder parameters; default as for `lr` by `teacher_trainable`."""
    steps: int | None = None
    """Optimizer steps; default: `epochs` passes over the unlabeled pool."""
    epochs: float = 0.5
    """Passes over the unlabeled pool when `steps` is not given."""
    min_steps: int = 30
    """With `epochs`: at least this many steps (short texts make few, large batches: a 64-class set of 9-token texts has 17 a pass)."""
    min_steps_per_class: int = 2
    """With `epochs`: at least this many steps per class too (a student distils a distribution over every class: 64 classes need more steps than 4)."""
    labeled_tokens: int = 1024
    """Token budget of a labeled batch (real tokens, no padding)."""
    unlabeled_tokens: int = 4096
    """Token budget of an unlabeled batch."""
    lr: float | None = None
    """AdamW learning rate of encoder parameters; default 3e-3 for 'bias'/'bias+norm', 5e-5 for 'all'."""
    head_lr: float = 1e-2
    """AdamW learning rate of the classifier heads and the hidden-state projections."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup: float = 0.06
    """Fraction of steps with a linear learning-rate warm-up (then linear decay to zero)."""
    contrastive_steps: int = 40
    """Steps of supervised contrastive training of the whole teacher on the labels before the cohort trains (SetFit's lever, batched); 0 turns it off."""
    contrastive_stop_gap: float = 0.05
    """The contrastive steps end early once a step's loss is within this of the least its batch allows (its classes collapsed); 0: all of them."""
    contrastive_lr: float = 1e-4
    """AdamW learning rate of the contrastive steps (1e-4 reaches the loss's floor in half the steps of 5e-5; chosen on dev, docs/tuning.md)."""
    contrastive_temperature: float = 0.1
    """Temperature of the supervised contrastive loss."""
    contrastive_soup: int = 1
    """The contrastive phase runs this many times from the same pretrained weights (other dropout draws) and the teacher takes the mean of the adapted weights (a model soup); 1: once."""
    contrastive_tokens: int = 8192
    """Token budget of a contrastive batch of labeled texts (more tokens: more same-class pairs per step)."""
    students_from: str = "adapted"
    """Which teacher the students' layers are copied from: 'pretrained', or 'adapted' (after the contrastive phase; the students then inherit its adapted weights and still train their bias terms only)."""
    fit_heads: bool = True
    """Each head starts as a logistic regression of the labels on its member's embeddings (else: random)."""
    distill: str = "offline"
    """'online': the teacher trains throughout and is run on every unlabeled batch; 'offline': the teacher trains only in its warm-up, then its logits on the whole unlabeled pool are computed once and the students distil from that cache."""
    teacher_warmup_steps: int = 0
    """Steps in which only the teacher trains in the cohort (its labels and the propagated ones) before the students start (at most half the steps); 0: the adapted teacher is final."""
    temperature: float = 2.0
    """Temperature of the logit distillation (KL, scaled by T^2)."""
    kd_weight: float = 1.0
    """Weight of teacher -> student distillation on unlabeled text."""
    hidden_weight: float = 0.0
    """Weight of hidden-state distillation (MSE through a learned projection); 0 turns it off."""
    embedding_weight: float = 0.0
    """Weight of embedding distillation on unlabeled text: 1 - cosine between each student's pooled embedding and the teacher's (cached with its logits in offline distillation); 0 turns it off."""
    self_train_weight: float = 1.0
    """Weight of the teacher's self-training on unlabeled text (its confident predictions as labels); 0 turns it off."""
    graph_weight: float = 1.0
    """Weight of the teacher's loss on propagated labels (kNN label propagation over its pretrained embeddings); 0 turns it off."""
    student_graph_weight: float = 1.0
    """Weight of each student's loss on the propagated labels (on its own view, from its first step); 0 turns it off."""
    graph_k: int = 10
    """Neighbours per text in the label-propagation graph."""
    graph_alpha: float = 0.9
    """How far labels spread in label propagation (Zhou et al.'s alpha, in (0, 1)): near 1 they diffuse over long paths of the graph, lower keeps each text's label closer to its nearest labeled neighbours (0.9 by default: its most certain labels are the more accurate on dev, docs/tuning.md)."""
    graph_refreshes: int = 0
    """Times label propagation reruns on the teacher's current embeddings, evenly spaced over training (0: the pretrained graph throughout)."""
    teacher_dev_labels: bool = True
    """The teacher also learns the dev labels (its contrastive phase and head, and label propagation's seeds); the students' own labeled batches and heads keep to the training labels, and their dev checks, optimistic then, still pick each student's step."""
    student_dev_labels: bool = False
    """The students also learn the dev labels (their heads and labeled batches); their dev checks, which still pick each one's step, then measure fit more than generalisation."""
    student_head_dev_labels: bool = False
    """The students' heads start fitted on the dev labels too (as the teacher's); their labeled batches keep to the training labels."""
    pseudo_head_share: float = 1.0
    """After label propagation, the teacher's head is refitted on the labels plus this share of each class's most certain propagated labels, before it teaches (0: the head stays fitted on the labels alone). No effect without propagation or with random heads."""
    student_pseudo_head_share: float = 1.0
    """After label propagation, each student's head is fitted on its own embeddings of its labels plus this share of each class's most certain propagated labels (0: on the labels alone). No effect without propagation or with random heads."""
    student_head_targets: str = "graph"
    """What the students' heads are fitted on beside their labels (with --student-pseudo-head-share): 'graph', each class's most certain propagated labels; 'teacher', the finished teacher's predictions on the whole pool (offline distillation without a warm-up, where they are cached before the students start; else as 'graph')."""
    check_texts: int = 0
    """Unlabeled texts (at most a tenth of the pool, drawn by seed) held out of the steps and the heads' fits, on which each student's state as it starts (its head fitted, no step) and its trained state are compared by agreement with the teacher: the one agreeing more ships. 0 (the default: on dev the agreement did not tell the better state, docs/tuning.md) holds none out and ships the trained state."""
    confidence: float = 0.9
    """Probability a teacher prediction needs to become a pseudo-label for self-training."""
    mutual_weight: float = 1.0
    """Final weight of mutual learning between students (each against its detached peers)."""
    mutual_loss: str = "mse"
    """'mse' on probabilities or 'kl' between students' distributions."""
    mutual_rampup: float = 0.3
    """Fraction of training over which the mutual-learning weight ramps up linearly from 0."""
    views: list[str] = field(default_factory=lambda: ["cutoff", "noise"])
    """Data view per student, cycled: 'cutoff' (drop tokens), 'noise' (embedding noise), 'dropout' (dropout only)."""
    cutoff_rate: float = 0.1
    """Share of tokens (never the first or last) dropped by the 'cutoff' view."""
    noise_std: float = 0.05
    """Std of the Gaussian noise added to embeddings by the 'noise' view."""
    eval_every: int = 25
    """Evaluate on dev (and write the resume state) every M steps."""
    eval_tokens: int | None = None
    """Token budget of the batches without gradients (propagation, cached logits, dev, test); default: 16384 on a GPU, 4096 on a CPU (faster there: docs/tuning.md)."""
    attention: str = "auto"
    """Attention backend: auto, flash, torch_varlen, sdpa, reference."""
    attention_dropout: float | None = 0.0
    """Dropout on the attention probabilities in training; None: the teacher's config (0.1 for MiniLM). 0 was level with 0.1 on dev and up to 18% faster on a CPU (docs/tuning.md); torch_varlen has none, so it trains only with 0."""
    max_length: int = 128
    """Truncate texts to this many tokens, in training and in what ships (at most the
    teacher's own max length, 256 for the default teacher). On yahoo_answers' long texts 128
    was better on dev than 256 and cost half the time (docs/tuning.md)."""
    resume: bool = False
    """Continue from the run directory's last saved state."""
    overwrite: bool = False
    """Start a fresh run in a non-empty run directory, replacing a previous run's outputs there (nanonet/rundir.py)."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""

    def validate(self) -> None:
        def bad(flag: str, msg: str) -> NanonetError:
            return NanonetError(f"--{flag.replace('_', '-')}: {msg}")

        if (self.data is None) == (not self.labeled):
            raise NanonetError(
                "give --data (N labels per class drawn from its train file) or --labeled FILE (your labeled rows), one of the two"
            )
        if not self.labeled and (self.dev or self.test):
            raise bad("dev" if self.dev else "test", "goes with --labeled; with --data the directory's own dev and test files are used")
        if self.labels_per_class < 1:
            raise bad("labels_per_class", "must be >= 1")
        if self.max_unlabeled is not None and self.max_unlabeled < 1:
            raise bad("max_unlabeled", "must be >= 1")
        if self.dev_per_class is not None and self.dev_per_class < 0:
            raise bad("dev_per_class", "must be >= 0")
        if self.check_texts < 0:
            raise bad("check_texts", "must be >= 0")
        if self.students < 1:
            raise bad("students", "must be >= 1")
        if self.trainable not in TRAINABLE:
            raise bad("trainable", f"must be one of {', '.join(TRAINABLE)}, got '{self.trainable}'")
        if self.teacher_trainable not in TRAINABLE:
            raise bad("teacher_trainable", f"must be one of {', '.join(TRAINABLE)}, got '{self.teacher_trainable}'")
        if self.student_layers is not None and len(self.student_layers) != self.students:
            raise bad("student_layers", f"gives {len(self.student_layers)} layer lists for {self.students} students")
        if self.steps is not None and self.steps < 1:
            raise bad("steps", "must be >= 1")
        if self.min_steps < 0:
            raise bad("min_steps", "must be >= 0")
        if self.min_steps_per_class < 0:
            raise bad("min_steps_per_class", "must be >= 0")
        if self.epochs <= 0:
            raise bad("epochs", "must be > 0")
        if not 0 < self.confidence <= 1:
            raise bad("confidence", "must be in (0, 1]")
        if self.students_from not in ("pretrained", "adapted"):
            raise bad("students_from", f"must be pretrained or adapted, got '{self.students_from}'")
        if self.distill not in ("online", "offline"):
            raise bad("distill", f"must be online or offline, got '{self.distill}'")
        if self.embedding_weight < 0:
            raise bad("embedding_weight", "must be >= 0")
        if self.distill == "offline" and self.hidden_weight > 0:
            raise bad("distill", "offline caches the teacher's logits, not its hidden states; use --distill online with --hidden-weight")
        untrained = self.teacher_warmup_steps == 0 and self.contrastive_steps == 0 and not self.fit_heads
        if self.distill == "offline" and self.kd_weight > 0 and untrained:
            raise bad(
                "distill", "offline with no teacher warm-up, no contrastive steps and random heads would distil from an untrained teacher"
            )
        if self.mutual_loss not in ("mse", "kl"):
            raise bad("mutual_loss", "must be mse or kl")
        if any(v not in VIEWS for v in self.views) or not self.views:
            raise bad("views", f"each must be one of {', '.join(VIEWS)}")
        if not 0 <= self.cutoff_rate < 1:
            raise bad("cutoff_rate", "must be in [0, 1)")
        if self.attention not in ("auto", "flash", "torch_varlen", "sdpa", "reference"):
            raise bad("attention", f"unknown backend '{self.attention}' (known: auto, flash, torch_varlen, sdpa, reference)")
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise bad("attention_dropout", "must be in [0, 1)")
        if self.graph_weight < 0:
            raise bad("graph_weight", "must be >= 0")
        if self.student_graph_weight < 0:
            raise bad("student_graph_weight", "must be >= 0")
        if self.graph_k < 1:
            raise bad("graph_k", "must be >= 1")
        if not 0 < self.graph_alpha < 1:
            raise bad("graph_alpha", "must be in (0, 1)")
        if self.graph_refreshes < 0:
            raise bad("graph_refreshes", "must be >= 0")
        for name in ("pseudo_head_share", "student_pseudo_head_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "must be in [0, 1]")
        if self.student_head_targets not in ("graph", "teacher"):
            raise bad("student_head_targets", f"must be graph or teacher, got '{self.student_head_targets}'")
        if self.contrastive_steps < 0:
            raise bad("contrastive_steps", "must be >= 0")
        if self.contrastive_stop_gap < 0:
            raise bad("contrastive_stop_gap", "must be >= 0")
        if self.contrastive_soup < 1:
            raise bad("contrastive_soup", "must be >= 1")
        if self.contrastive_temperature <= 0:
            raise bad("contrastive_temperature", "must be > 0")
        if self.eval_every < 1:
            raise bad("eval_every", "must be >= 1")
        if self.max_length < 3:
            raise bad("max_length", "must be >= 3 (a token between [CLS] and [SEP])")
        for name in ("labeled_tokens", "unlabeled_tokens", "eval_tokens", "contrastive_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 16:
                raise bad(name, "must be >= 16")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
