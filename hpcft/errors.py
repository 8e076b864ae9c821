"""Every error hpcft raises on purpose.

A `UserError` is the user's to fix (a bad key, a missing file, a bad value): the CLI
prints its message alone, without a traceback, and exits with status 2. Anything else
is a bug in hpcft and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from hydra.errors import CompactHydraException


class HpcftError(Exception):
    """Base class of hpcft's own errors."""


class UserError(HpcftError):
    """Something the user gave is wrong; the message says what and where."""

    exit_code = 2


class ConfigError(UserError):
    """A config key has a bad value. `key` is the dotted path, e.g. `framework.learning_rate`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ForeignAppError(UserError, CompactHydraException):
    """`hydra/launcher=hpcft` under another app's `@hydra.main`: Hydra prints a compact
    exception's message alone, without a traceback."""


class DataError(UserError):
    """A data file is missing or malformed; the message names the file and line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class StageFailedError(HpcftError):
    """A stage run by the local executor failed; the message names it and its log."""

    exit_code = 1


class SchedulerUnreachable(HpcftError):
    """A Slurm command (squeue, sacct, scancel) failed or is missing: the scheduler could not be
    asked. One line, the command and what it said; exit status 1."""

    exit_code = 1


class SubmissionError(HpcftError):
    """The scheduler refused a stage; stages already submitted have been cancelled."""

    exit_code = 1


class SubmissionInterrupted(SubmissionError):
    """Ctrl-C, SIGTERM or SIGHUP during submission; what was submitted has been cancelled."""

    exit_code = 130


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """A message for an unknown name, with the closest valid names (or all when few)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif len(valid) <= 20:
        hint = "valid: " + ", ".join(valid)
    else:
        hint = f"no close match among its {len(valid)} valid names"
    return f"unknown {kind} {name!r}; {hint}"
