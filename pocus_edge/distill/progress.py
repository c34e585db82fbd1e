"""Rich progress bars on stderr, shared by every long command: training steps (distill, finetune), items
(eval images) and named stages with their elapsed time (export); silent with --quiet.

`progress_enabled(log)` is the one rule for "show progress": the command's info logs are on (the CLI turns them
off with --quiet; a library caller who configured no logging sees no bars).
"""

from __future__ import annotations

import logging

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..cli_common import console


def progress_enabled(log: logging.Logger) -> bool:
    """True when `log` shows info messages (not --quiet)."""
    return log.isEnabledFor(logging.INFO)


class TrainProgress:
    """Context manager wrapping rich.Progress; `update` takes the step just finished."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool, label: str = "distill"):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]} img/s  loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.progress.add_task(label, total=total_steps, completed=start_step, speed="-", loss="-")

    @property
    def live(self) -> bool:
        """Whether the bar is drawn live (enabled, on a terminal); else callers keep their log lines."""
        return self.enabled and console.is_terminal

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, images_per_s: float, label: str | None = None) -> None:
        fields = {"description": label} if label is not None else {}
        self.progress.update(self.task, completed=step, speed=f"{images_per_s:.1f}", loss=f"{loss:.4f}", **fields)


class ItemProgress:
    """A bar over N items (images) with ETA; `advance(n)` after each batch."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled,
        )
        self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> ItemProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)


class StageProgress:
    """Named stages, one line each with a spinner and its elapsed time (✓ when done, ✗ when it failed).

    `begin(name)` ends the stage before it; `close(failed)` ends the last one and the display; safe to call twice.
    """

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, disable=not enabled,
        )
        self.current: int | None = None
        self.started = False

    def begin(self, name: str) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self._finish()
        self.current = self.progress.add_task(f"{self.label}: {name}", total=1)

    def _finish(self, failed: bool = False) -> None:
        if self.current is not None:
            if failed:
                task = self.progress.tasks[self.current]
                self.progress.update(self.current, description=f"{task.description} [red]✗ failed")
                self.progress.stop_task(self.current)
            else:
                self.progress.update(self.current, completed=1)
            self.current = None

    def close(self, failed: bool = False) -> None:
        self._finish(failed)
        if self.started:
            self.progress.stop()
            self.started = False
