"""Where a stage's job will run, as far as the login node can tell: its interpreter and
whether that interpreter has the packages a plan needs.

Asked only when a plan needs an optional package (a LLaMA-Factory recipe's optimizer, kernel
or method), so a plain run pays nothing: the submitting interpreter (the jobs' when
`cluster.python` is empty) is asked with `importlib.util.find_spec`, which imports nothing;
another interpreter visible from here is asked once, in one subprocess, for all modules.
A container or an interpreter this machine cannot see cannot be asked: the answer is None,
and the plan says the check was skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hpcft.config.schema import HpcftConfig

ASK = (
    "import importlib.util, json, sys\n"
    "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))\n"
)
"""The question put to another interpreter: which of these modules it cannot find."""


def train_python(cfg: HpcftConfig) -> tuple[str, ...]:
    """The train stage's interpreter command (`cluster.train.python`, else `cluster.python`);
    empty: the interpreter that submits."""
    site = cfg.cluster.train.python
    return tuple(site if site is not None else cfg.cluster.python)


def missing_modules(python: Sequence[str], modules: Sequence[str]) -> list[str] | None:
    """The `modules` the interpreter `python` cannot import (top-level names); None when it
    cannot be asked from here (a wrapper command or a path this machine does not see)."""
    if not modules:
        return []
    # Paths compared unresolved: a venv's python links to its base interpreter, whose packages differ.
    if not python or Path(python[0]).absolute() == Path(sys.executable).absolute():
        return [m for m in modules if importlib.util.find_spec(m) is None]
    if len(python) > 1 or not Path(python[0]).is_file():
        return None
    try:
        out = subprocess.run([python[0], "-c", ASK, *modules], capture_output=True, text=True, timeout=60, check=True)
        return list(json.loads(out.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
