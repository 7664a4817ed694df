"""The label-scarce protocol: N labeled examples per class from train, the rest unlabeled.

A user with N labels per class has no dev set, so by default a run holds none for model
selection: every label it is given trains, as SetFit's do. `dev_per_class` M holds M per
class, drawn by seed from the dev file when there is one, else held out from train
(never from the labeled examples); the report states every labeled example a run saw,
training and selection together. Evaluation uses test when given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nanonet.data.tables import SUFFIXES, Table, read_table
from nanonet.runtimes.errors import NanonetError


@dataclass
class Splits:
    """What training sees. `unlabeled` never carries labels; the labels of the train rows
    that became unlabeled are hidden from training."""

    labels: list[str]  # class names, sorted; index = class id
    labeled_texts: list[str]
    labeled_ids: list[int]
    unlabeled_texts: list[str]
    dev_texts: list[str]
    dev_ids: list[int]
    test_texts: list[str] = field(default_factory=list)
    test_ids: list[int] = field(default_factory=list)
    dev_source: str = "dev"  # "dev" file, or "held out from train"
    dev_per_class: int | None = None  # at most this many dev examples per class
    unlabeled_available: int | None = None  # the pool's size before `cap_unlabeled` drew from it
    source: str = "labels per class"  # or "labeled file"
    warnings: list[str] = field(default_factory=list)  # what a run should say before it starts
    unpredictable: list[str] = field(default_factory=list)  # classes of dev or test that no labeled row names

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.labeled_ids, dtype=np.int64), minlength=len(self.labels))
        return {name: int(n) for name, n in zip(self.labels, counts)}

    def summary(self) -> dict:
        return {
            "source": self.source,
            "classes": len(self.labels),
            "label_counts": self.label_counts(),
            "unpredictable_classes": self.unpredictable,
            "labeled": len(self.labeled_texts),
            "unlabeled": len(self.unlabeled_texts),
            "unlabeled_available": self.unlabeled_available or len(self.unlabeled_texts),
            "dev": len(self.dev_texts),
            "test": len(self.test_texts),
            "dev_source": self.dev_source,
            "dev_per_class": self.dev_per_class,
            "labeled_seen": len(self.labeled_texts) + len(self.dev_texts),  # training + selection
        }


def find_split_files(directory: Path) -> dict[str, Path]:
    """{'train': path, 'dev': path, 'test': path} for the files in a data directory."""
    found: dict[str, Path] = {}
    aliases = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}
    for path in sorted(directory.iterdir()):
        split = aliases.get(path.stem.lower())
        if split and path.suffix.lower() in SUFFIXES and path.suffix.lower() != ".txt":
            if split in found:
                raise NanonetError(f"{directory}: two files for the {split} split ({found[split].name}, {path.name})")
            found[split] = path
    if "train" not in found:
        raise NanonetError(f"{directory}: no train file (expected train.jsonl, train.csv, train.tsv or train.parquet)")
    return found


def load_tables(data: str, text_col: str = "text", label_col: str = "label") -> dict[str, Table]:
    """A data directory, a single train file, or a `datasets` name -> {'train', 'dev'?, 'test'?}."""
    path = Path(data)
    if path.is_dir():
        return {s: read_table(p, text_col, label_col, need_labels=True) for s, p in find_split_files(path).items()}
    if path.is_file():
        return {"train": read_table(path, text_col, label_col, need_labels=True)}
    if path.suffix.lower() in SUFFIXES or data.startswith((".", "/", "~")):
        raise NanonetError(f"--data: {data}: no such file or directory")
    return _load_hub_dataset(data, text_col, label_col)


def _load_hub_dataset(name: str, text_col: str, label_col: str) -> dict[str, Table]:
    try:
        import datasets
    except ImportError:
        raise NanonetError(f"--data {name}: loading a hub dataset needs 'datasets' (pip install 'nanonet[train]')") from None
    try:
        ds = datasets.load_dataset(name)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NanonetError(f"--data {name}: not a local path, and could not load it from the hub ({reason})") from None
    tables: dict[str, Table] = {}
    for split, key in (("train", "train"), ("dev", "validation"), ("test", "test")):
        if key not in ds:
            continue
        part = ds[key]
        for col in (text_col, label_col):
            if col not in part.column_names:
                raise NanonetError(f"--data {name}: split '{key}' has no column '{col}' (have: {', '.join(part.column_names)})")
        feature = part.features[label_col]
        names = getattr(feature, "names", None)
        raw = part[label_col]
        if names and any(x is None or x < 0 for x in raw):  # hub test splits often hide labels as -1
            if split == "train":
                raise NanonetError(f"--data {name}: the train split has unlabeled rows (label -1)")
            continue
        labels = [names[x] if names else str(x) for x in raw]
        tables[split] = Table(f"{name}[{key}]", list(part[text_col]), labels)
    if "train" not in tables:
        raise NanonetError(f"--data {name}: the dataset has no train split")
    return tables


def label_scarce(
    tables: dict[str, Table], labels_per_class: int, seed: int, extra_unlabeled: list[str] | None = None, dev_per_class: int | None = 0
) -> Splits:
    """Draw N labeled examples per class from train with `seed`; the rest becomes unlabeled.

    Dev holds `dev_per_class` (None: N) examples per class for model selection: drawn by
    seed from the dev split when there is one (all of a class that has fewer), else held
    out from train. 0 (the default, as TrainArgs): none, and the dev split goes unread."""
    train = tables["train"]
    assert train.labels is not None
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise NanonetError(f"{train.path}: needs at least 2 classes, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in train.labels])
    hold_dev = "dev" not in tables
    dev_n = labels_per_class if dev_per_class is None else dev_per_class
    per_dev = dev_n if hold_dev else 0
    rng = np.random.default_rng(seed)
    labeled, dev = [], []
    for c, name in enumerate(classes):
        rows = np.flatnonzero(y == c)
        if len(rows) < labels_per_class + per_dev:
            need = f"{labels_per_class} labeled" + (f" + {per_dev} dev" if per_dev else "")
            raise NanonetError(f"{train.path}: class '{name}' has {len(rows)} examples, fewer than {need}")
        picked = rng.permutation(rows)[: labels_per_class + per_dev]
        labeled += picked[:labels_per_class].tolist()
        dev += picked[labels_per_class:].tolist()
    taken = set(labeled) | set(dev)
    unlabeled = [t for i, t in enumerate(train.texts) if i not in taken] + list(extra_unlabeled or [])
    labeled = rng.permutation(labeled).tolist()

    def ids(table: Table) -> list[int]:
        assert table.labels is not None
        for row, label in enumerate(table.labels, start=1):
            if label not in index:
                raise NanonetError(f"{table.path}: row {row}: label '{label}' does not occur in train")
        return [index[label] for label in table.labels]

    if not dev_n:
        dev_texts, dev_ids = [], []
    elif hold_dev:
        dev_texts, dev_ids = [train.texts[i] for i in dev], [int(y[i]) for i in dev]
    else:
        dev_texts, dev_ids = _draw_per_class(tables["dev"].texts, ids(tables["dev"]), dev_n, seed)
    test = tables.get("test")
    return Splits(
        labels=classes,
        labeled_texts=[train.texts[i] for i in labeled],
        labeled_ids=[int(y[i]) for i in labeled],
        unlabeled_texts=unlabeled,
        dev_texts=dev_texts,
        dev_ids=dev_ids,
        test_texts=test.texts if test else [],
        test_ids=ids(test) if test else [],
        dev_source="none" if not dev_n else "held out from train" if hold_dev else "dev",
        dev_per_class=dev_n,
    )


def hand_labeled(labeled: Table, unlabeled: list[str], dev: Table | None = None, test: Table | None = None) -> Splits:
    """A person's labeled rows as they are, classes of any size; the pool is `unlabeled`
    (without the texts that were labeled, which a cold-start pick takes from it).

    A class with one labeled row still trains (a warning says so). A class that dev or
    test names but no labeled row cannot be predicted: a warning names it, and its rows
    count as errors (class id -1)."""
    assert labeled.labels is not None
    classes = sorted(set(labeled.labels))
    if len(classes) < 2:
        raise NanonetError(f"{labeled.path}: needs at least 2 classes, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    ids = [index[label] for label in labeled.labels]
    counts = np.bincount(ids, minlength=len(classes))
    warnings = []
    single = [c for c, n in zip(classes, counts) if n == 1]
    if single:
        warnings.append(
            f"{labeled.path}: {_names(single)} {'has' if len(single) == 1 else 'have'} one labeled row; it trains, but label more"
        )
    unpredictable: list[str] = []

    def gold(table: Table | None) -> tuple[list[str], list[int]]:
        if table is None:
            return [], []
        assert table.labels is not None
        unknown = sorted(set(table.labels) - set(index))
        if unknown:
            unpredictable.extend(c for c in unknown if c not in unpredictable)
            n = sum(label in unknown for label in table.labels)
            warnings.append(
                f"{table.path}: {_names(unknown)} {'is' if len(unknown) == 1 else 'are'} in no labeled row and cannot be predicted; "
                f"its {n} rows count as errors"
            )
        return table.texts, [index.get(label, -1) for label in table.labels]

    dev_texts, dev_ids = gold(dev)
    test_texts, test_ids = gold(test)
    taken = set(labeled.texts)
    return Splits(
        labels=classes,
        labeled_texts=list(labeled.texts),
        labeled_ids=ids,
        unlabeled_texts=[t for t in unlabeled if t not in taken],
        dev_texts=dev_texts,
        dev_ids=dev_ids,
        test_texts=test_texts,
        test_ids=test_ids,
        dev_source="dev" if dev is not None else "none",
        source="labeled file",
        warnings=warnings,
        unpredictable=unpredictable,
    )


def _names(classes: list[str], shown: int = 5) -> str:
    names = ", ".join(f"'{c}'" for c in classes[:shown]) + (f" and {len(classes) - shown} more" if len(classes) > shown else "")
    return ("class " if len(classes) == 1 else "classes ") + names


def cap_unlabeled(splits: Splits, max_unlabeled: int | None, seed: int) -> Splits:
    """At most `max_unlabeled` texts of the unlabeled pool, drawn by `seed` (its own stream)
    and kept in pool order: what a run costs then stops growing with the pool."""
    pool = splits.unlabeled_texts
    if max_unlabeled is None or len(pool) <= max_unlabeled:
        return splits
    keep = np.sort(np.random.default_rng([seed, 11]).permutation(len(pool))[:max_unlabeled])
    return replace(splits, unlabeled_texts=[pool[i] for i in keep], unlabeled_available=len(pool))


def _draw_per_class(texts: list[str], ids: list[int], per_class: int, seed: int) -> tuple[list[str], list[int]]:
    """At most `per_class` rows of each class, drawn by `seed` (its own stream, so the train
    draw does not depend on the dev file), in file order."""
    y = np.asarray(ids)
    rng = np.random.default_rng([seed, 7])
    keep = sorted(r for c in np.unique(y) for r in rng.permutation(np.flatnonzero(y == c))[:per_class].tolist())
    return [texts[i] for i in keep], [ids[i] for i in keep]
