"""The training progress bar (rich): steps, loss, dev accuracy and tokens/s."""

from __future__ import annotations

import os


class TrainBar:
    """A rich progress bar with loss, dev accuracy and tokens/s."""

    def __init__(self, total: int, start: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=start, stats="")

    def update(self, step: int, loss: float, dev_acc: float | None, tokens_per_s: float) -> None:
        dev = f"dev {dev_acc:.3f}" if dev_acc is not None else "dev -"
        self.progress.update(self.task, completed=step, stats=f"loss {loss:.3f}  {dev}  {tokens_per_s:,.0f} tok/s")

    def close(self) -> None:
        self.progress.stop()


def progress_bar(enabled: bool, total: int, start: int) -> TrainBar | None:
    """A bar on an interactive run; none when disabled or NANONET_NO_PROGRESS is set."""
    return TrainBar(total, start) if enabled and not os.environ.get("NANONET_NO_PROGRESS") else None
