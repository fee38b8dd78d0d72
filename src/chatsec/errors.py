"""Expected failures: the CLI prints their message on one line and exits with their code."""

from __future__ import annotations


class ChatsecError(Exception):
    """An expected error (bad input, unreachable server, missing key): one line, no traceback."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
