"""`nanonet train`'s flags default to what TrainArgs documents, so the CLI and Python agree."""

from __future__ import annotations

import dataclasses

import typer

from nanonet.cli import app
from nanonet.train.args import TrainArgs


def test_train_flags_default_to_the_trainargs_defaults():
    command = typer.main.get_command(app).commands["train"]
    fields = {f.name: f for f in dataclasses.fields(TrainArgs)}
    checked = []
    for param in command.params:
        field = fields.get(param.name)
        if field is None or field.default is dataclasses.MISSING:
            continue
        default = param.default if not isinstance(param.default, tuple) else list(param.default)
        if param.name == "unlabeled":
            continue  # a repeatable option: an empty list either way
        assert default == field.default, f"--{param.name.replace('_', '-')}: CLI {default!r}, TrainArgs {field.default!r}"
        checked.append(param.name)
    assert {"contrastive_steps", "distill", "students_from", "fit_heads", "dev_per_class", "labels_per_class", "epochs"} <= set(checked)
