"""User-caused errors and how they reach the terminal.

Anything a user can get wrong (a config value, a path, a data file) is raised
as ``ConfigError`` before training starts; the CLI prints its one line and
exits with code 2. Tracebacks are for bugs in labline, not for typos.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

USER_ERROR_EXIT = 2


class ConfigError(ValueError):
    """A problem the user can fix by changing a config value, a path or a file."""

    def __init__(self, key: str, problem: str, valid: Iterable[str] | str | None = None):
        self.key = key
        self.problem = problem
        if valid is not None and not isinstance(valid, str):
            valid = ", ".join(str(v) for v in valid)
        self.valid = valid
        message = f"{key}: {problem}"
        if valid:
            message += f" (valid: {valid})"
        super().__init__(message)


def exit_with(error: ConfigError) -> None:
    """Print the one-line message and leave with the user-error exit code."""
    line = " ".join(str(error).split())
    print(f"labline: error: {line}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


_warned: set[str] = set()


def warn_once(key: str, problem: str, advice: str) -> None:
    """One line on stderr for a choice that runs but is likely wrong for the data (not an error: the user may
    mean it). Printed once per process, though data are loaded more than once (checks, folds)."""
    line = " ".join(f"{key}: {problem} ({advice})".split())
    if line not in _warned:
        _warned.add(line)
        print(f"labline: warning: {line}", file=sys.stderr)
