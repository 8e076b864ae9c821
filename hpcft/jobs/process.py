"""Running the frameworks' commands inside a job."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def resolve(argv: list[str]) -> list[str]:
    """Find a console script (`llamafactory-cli`, `torchrun`) next to this job's Python first,
    so jobs work from a virtual environment that was never activated."""
    beside = Path(sys.executable).parent / argv[0]
    if "/" not in argv[0] and beside.is_file():
        return [str(beside), *argv[1:]]
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(f"{argv[0]!r} is neither beside {sys.executable} nor on PATH")
    return list(argv)
