"""The progress bar of long row-by-row work (`chatsec keys rotate`): on a terminal only."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from chatsec.cli import output


class _RowsLeft(ProgressColumn):
    def render(self, task: Task) -> Text:
        left = int(task.remaining or 0)
        return Text(f"{left} left")


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- rows/s" if speed is None else f"{speed:,.0f} rows/s")


def rows_progress(description: str) -> Progress:
    """Rows done of the total, rows left, rows per second, time: on stderr, and only on a
    terminal (on a pipe only the lines the command prints itself)."""
    err = output.console(stderr=True)
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        _RowsLeft(),
        _RowsPerSecond(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )
