"""The training progress bars (rich): one per phase before the steps (the teacher's
contrastive steps, label propagation's pass over the unlabeled pool), the steps' bar with
loss, dev accuracy and tokens/s, and the final test pass."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def warn(message: str) -> None:
    """One warning line on stderr (also when the bars are off: it is not progress)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _shown(enabled: bool) -> bool:
    return enabled and not os.environ.get("NANONET_NO_PROGRESS")


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
    return TrainBar(total, start) if _shown(enabled) else None


Advance = Callable[[int], None]  # a bar's: called with how many more units (steps, texts) are done


@contextmanager
def phase_bar(enabled: bool, label: str, total: int, unit: str) -> Iterator[Advance | None]:
    """A bar for one phase, shown from its first second: `label`, done/total `unit`,
    elapsed and remaining time. Yields the function that advances it (None when no bar
    is shown, on the same terms as `progress_bar`)."""
    if not _shown(enabled) or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn()
    )
    task = progress.add_task(label, total=total)
    progress.start()
    try:
        yield lambda n: progress.advance(task, n)
    finally:
        progress.stop()
