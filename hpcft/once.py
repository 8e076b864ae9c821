"""Each file read, and each question put to a job's interpreter, once per command.

A sweep's 256 points name the same 100k-row training file; a plan asks the train job's
interpreter about the same modules for its notes, its files and its memory check. What was
learned is kept in one explicit object, `Once`, whose life is one command (`python -m hpcft
...`, one `launch`, one API call, one study controller): `per_command()` opens it, and
every reader asks `once(key, compute)` with a key that holds the file's state (path, size,
mtime), so an edited file is read again. Outside any command nothing is kept, so a
long-lived Python process (a notebook) never answers from an earlier command's reading.

Why a context variable and not a parameter: the readers sit under the framework adapters'
own checks, several calls deep, and a sweep's points are checked by Hydra's launcher plugin
in the same command; threading the object through every signature would put it in every
adapter method. Its scope, not its passing, is what makes it explicit.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Once:
    """What one command learned: keyed values, each computed the first time it is asked for."""

    def __init__(self) -> None:
        self._known: dict[Hashable, Any] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key not in self._known:
            self._known[key] = compute()  # an error is raised, not kept: the next ask reads again
        value: T = self._known[key]
        return value

    def __len__(self) -> int:
        return len(self._known)


_current: ContextVar[Once | None] = ContextVar("hpcft_once", default=None)


@contextmanager
def per_command() -> Iterator[Once]:
    """The scope of one command; nested scopes (a `launch` inside the command line's) share
    the outer one."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    memo = Once()
    token = _current.set(memo)
    try:
        yield memo
    finally:
        _current.reset(token)


def once(key: Hashable, compute: Callable[[], T]) -> T:
    """`compute()`, or what it gave earlier in this command for the same `key`."""
    memo = _current.get()
    return compute() if memo is None else memo.get(key, compute)


def file_state(path: str | Path) -> tuple[str, int, int] | None:
    """A file's identity for `once` keys: absolute path, size and mtime; None when it cannot
    be read (the reader then names the problem)."""
    try:
        stat = Path(path).expanduser().stat()
    except OSError:
        return None
    return str(Path(path).expanduser().absolute()), stat.st_size, stat.st_mtime_ns
