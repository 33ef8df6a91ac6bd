"""The one error of the condition language."""

from __future__ import annotations

from tessera.errors import InvalidPayload


class QuerySyntaxError(InvalidPayload):
    """A condition cannot be read or cannot be used where it was given (HTTP 422).

    `line` and `column` (both counted from 1) say where in the text, when the error has a place.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


def syntax_error(
    reason: str, line: int, column: int, expected: str | None = None
) -> QuerySyntaxError:
    """`condition: <reason> at line L, column C[; expected <expected>]`."""
    message = f"condition: {reason} at line {line}, column {column}"
    if expected:
        message += f"; expected {expected}"
    return QuerySyntaxError(message, line=line, column=column)
