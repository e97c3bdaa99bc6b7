"""The error the emulator raises when the local stack cannot start, and its one-line message."""

from __future__ import annotations


class LocalStackError(Exception):
    """The local stack cannot start; the message is one line fit for a CLI user."""


def one_line(error: BaseException) -> str:
    """Squeeze an exception message onto one line for CLI output."""
    return " ".join(str(error).split())
