"""The project's one error vocabulary, and the exit codes errors map to.

Every error a user can fix derives from `MltaggerError`: a bad file, row, option or config
value, a model folder that is missing, a store that cannot be read. Each command runs its work
in `user_errors()`, which prints any of them as one line on stderr and exits 2, so a user never
sees a traceback for their own mistake, while a bug (any other exception) still shows its
traceback. A module's own error (`StoreError`, `ScreenError`, `ReportError`, ...) subclasses one
of the classes here and keeps its name only so that callers can catch it alone.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class MltaggerError(Exception):
    """The base of every error a user can fix; printed as one line, exit 2."""


class UserError(MltaggerError):
    """Something the user gave cannot be used: a file, an option, a folder, a running service."""


class DataError(UserError):
    """A problem with the user's data or data config."""


class ConfigError(MltaggerError):
    """A config value a job cannot use (wrong type, out of range, null or missing path, unknown
    key), found before any data or model is loaded; one line naming the key, exit 2."""


EXIT_INVALID = 1  # the input has bad rows
EXIT_USAGE = 2  # the command could not run (missing file, bad option, bad config)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit code 2. A missing file
    the user named (`FileNotFoundError` from `open`) is one of them."""
    try:
        yield
    except (MltaggerError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
