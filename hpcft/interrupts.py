"""Signals that end a login session raise like Ctrl-C while something must be rolled back.

A closed terminal sends SIGHUP, a scheduler or `kill` sends SIGTERM: by default either ends
Python at once, with no `finally` run, so a half-submitted pipeline would be left queued.
Inside `interruptions_raised()` both raise KeyboardInterrupt instead, which the submitter
catches like any failure. SIGKILL cannot be caught; jobs it leaves are found by name later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


@contextmanager
def interruptions_raised() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt inside the block (main thread only: Python
    delivers signals there, and elsewhere the default handling stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
