"""Errors meant for people: one line, the file and line, what is wrong."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the CLI prints it as one line and exits with status 2."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.file, self.line = message, file, line

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else f"{self.file}: " if self.file else ""
        return where + self.message


class UserErrors(UserError):
    """Several problems found together (config validation collects them all)."""

    def __init__(self, errors: list[UserError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
