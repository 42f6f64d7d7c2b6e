"""Errors a user can fix and the exit codes they map to. Every command wraps its work in
`user_errors()`, so a bad file, option or override is one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class DataError(Exception):
    """A problem with the user's data or data config; the CLI prints it without a traceback."""


class ConfigError(DataError):
    """A config value a job cannot use (wrong type, out of range, null or missing path, unknown
    key), found before any data or model is loaded; one line naming the key, exit 2."""


EXIT_INVALID = 1  # the input has bad rows
EXIT_USAGE = 2  # the command could not run (missing file, bad option, bad config)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit code 2."""
    try:
        yield
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
