"""A rich progress bar for training: step count, images/s, loss and ETA; silent with --quiet."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Context manager wrapping rich.Progress; `update` takes the step just finished."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]distill"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} img/s  loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task("distill", total=total_steps, completed=start_step, speed="-", loss="-")

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=step, speed=f"{images_per_s:.1f}", loss=f"{loss:.4f}")
