"""Output that fits people and pipes: rich tables and colour on a terminal, plain aligned
text (no box, no colour, no wrapping inside a name) when stdout is a file or a pipe.

NO_COLOR (https://no-color.org) and `chatsec --no-color` turn colour off everywhere.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when something is printed, not to list the commands
    from rich.console import Console
    from rich.table import Table

# Wide enough that no table column is ever wrapped on a pipe.
_PIPE_WIDTH = 10_000


def to_terminal(stderr: bool = False) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    return stream.isatty()


def console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr): rich on a terminal, plain text on a pipe."""
    from rich.console import Console

    if to_terminal(stderr):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_PIPE_WIDTH, no_color=True, highlight=False)


def table(*headers: str, **options: Any) -> Table:
    """A table that draws a box on a terminal and is plain aligned columns on a pipe."""
    from rich import box
    from rich.table import Table

    if not to_terminal():
        options.setdefault("box", box.SIMPLE_HEAD if options.get("title") else None)
        options.setdefault("show_edge", False)
        options.setdefault("pad_edge", False)
    return Table(*headers, **options)
