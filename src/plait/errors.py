"""The errors a user can cause. Each carries one message meant to be read by a person."""

from __future__ import annotations


class PlaitError(Exception):
    """A mistake in the user's config, data or command: shown without a traceback."""


class ConfigError(PlaitError):
    """The config is invalid: the message names the path in the config, the value, what is allowed."""


class DataError(PlaitError):
    """The data does not fit the config: the message names file, row, column, found and expected."""


class BundleError(PlaitError):
    """A saved bundle is missing, incomplete or altered."""
