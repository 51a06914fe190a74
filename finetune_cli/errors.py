"""The CLI's two failure kinds, mapped to exit codes by ``main``."""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments or input (exit 2): the message says what is wrong and where."""


class RuntimeFailure(Exception):
    """AWS or runtime failure (exit 1)."""
