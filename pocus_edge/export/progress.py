"""Export progress: one line per stage with its elapsed time, and inside a long stage a bar over its items with ETA.

Stages of an int8 export: convert, calibrate on N frames (a bar over the calibration frames), sensitivity report
(over the layers), mixed-precision search (over its tries), write the int8 model, parity on N frames (over the
frames), self-test reference vectors, write bundle. `names` keeps every stage begun, in order (tests read it, not
the terminal). Disabled (--quiet, or a library caller without info logging) it draws nothing.

The target code reaches it as `request.progress` (ExportRequest) or `progress_of(job)` (an int8 job); a job
built without one (tests, the Python API's pieces) gets a silent one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..distill.progress import StageProgress

T = TypeVar("T")


class _ForItems(ProgressColumn):
    """`column` for a stage that counts items; nothing for a plain stage."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> Any:
        return self.column.render(task) if task.fields.get("items") else Text("")


class ExportProgress(StageProgress):
    """StageProgress (one line per stage, ✓/✗ and elapsed time) whose stages may count items with a bar and ETA."""

    def __init__(self, label: str, enabled: bool) -> None:
        from ..cli_common import console

        super().__init__(label, enabled)
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), _ForItems(BarColumn()),
            _ForItems(MofNCompleteColumn()), TimeElapsedColumn(), _ForItems(TextColumn("ETA")),
            _ForItems(TimeRemainingColumn()), console=console, disable=not enabled)
        self.names: list[str] = []

    @classmethod
    def silent(cls) -> ExportProgress:
        return cls("export", enabled=False)

    def begin(self, name: str) -> None:
        super().begin(name)
        self.names.append(name)

    def stage(self, name: str, items: int | None = None) -> None:
        """Begin stage `name`; with `items`, it shows a bar over that many items (`advance` after each)."""
        self.begin(name)
        if items is not None and self.current is not None:
            self.progress.update(self.current, total=max(int(items), 0), completed=0, items=True)

    def advance(self, n: int = 1) -> None:
        """`n` more items of the current stage done."""
        if self.current is not None:
            self.progress.advance(self.current, n)

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """Yield `items`, advancing the current stage after each one."""
        for item in items:
            yield item
            self.advance()

    def _finish(self, failed: bool = False) -> None:
        task = self._task()
        if task is not None and not failed and task.fields.get("items"):  # done: the count reached is the total
            self.progress.update(task.id, total=task.completed)
            self.current = None
            return
        super()._finish(failed)

    def _task(self) -> Task | None:
        return next((t for t in self.progress.tasks if t.id == self.current), None)


def progress_of(owner: Any) -> ExportProgress:
    """The export progress an ExportRequest or int8 job carries; a silent one when it has none."""
    return getattr(owner, "progress", None) or ExportProgress.silent()
