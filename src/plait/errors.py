"""The errors a user can cause. Each carries one message meant to be read by a person."""

from __future__ import annotations


class PlaitError(Exception):
    """A mistake in the user's config, data or command: shown without a traceback."""


class ConfigError(PlaitError):
    """The config is invalid: the message names the path in the config, the value, what is allowed."""


class DataError(PlaitError):
    """The data does not fit the config: the message names file, row, column, found and expected.

    ``row`` (0-based, in the table that was read), ``column`` and the ``problem`` without its
    place are kept when known, so a server can tell a client which record and field to fix.

    >>> error = DataError("record 2, field 'age': found 'old'; expected a number", row=2, column="age",
    ...                   problem="found 'old'; expected a number")
    >>> (error.row, error.column, error.problem)
    (2, 'age', "found 'old'; expected a number")
    """

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None,
                 problem: str | None = None) -> None:
        super().__init__(message)
        self.row, self.column, self.problem = row, column, problem or message


class BundleError(PlaitError):
    """A saved bundle is missing, incomplete or altered."""
