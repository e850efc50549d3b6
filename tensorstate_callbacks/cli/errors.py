"""The error every sub-command raises for a problem the user can fix."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 1.

    Example:
        >>> raise CommandError("log directory 'runs' does not exist")
        Traceback (most recent call last):
        ...
        tensorstate_callbacks.cli.errors.CommandError: log directory 'runs' does not exist
    """
